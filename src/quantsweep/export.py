"""Hugging Face model -> ONNX (optimum's exporter) -> graph optimized by ONNX Runtime."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantsweep.files import ONNX_FILE, atomic_write_text
from quantsweep.records import ExportFacts

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

# torch's exporter refuses scaled_dot_product_attention below this opset.
SDPA_MIN_OPSET = 14


class ModelLoadError(RuntimeError):
    """A model that cannot be loaded; the message is for the user."""


def _hub_hint(model_name_or_path: str, error: BaseException) -> ModelLoadError:
    first_line = str(error).splitlines()[0] if str(error) else ""
    return ModelLoadError(
        f"Could not load model {model_name_or_path!r}: {type(error).__name__}: {first_line}. "
        "If it is a Hub id and this machine has no network access, point `model_name_or_path` at a local "
        "folder written by save_pretrained (config.json, weights and tokenizer files)."
    )


def load_model_config(model_name_or_path: str, revision: str | None) -> PretrainedConfig:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model_name_or_path, revision=revision)
    except Exception as error:
        raise _hub_hint(model_name_or_path, error) from error


def load_tokenizer(model_name_or_path: str, revision: str | None) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_name_or_path, revision=revision, use_fast=True)
    except Exception as error:
        raise _hub_hint(model_name_or_path, error) from error


def optimize_graph(source: Path, target: Path, level: int) -> str:
    """Apply ONNX Runtime's offline graph optimizations at ``level``; returns what was applied.

    Level 1 is ONNX Runtime's *basic* set (constant folding, redundant-node elimination,
    semantics-preserving rewrites into standard ONNX ops), so the result stays a graph
    the quantizer can read. Extended levels would emit contrib fusions (Attention,
    SkipLayerNormalization, FastGelu) that it cannot type-check.
    """
    if level == 0:
        shutil.copyfile(source, target)
        return "none"
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(target)
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    return "onnxruntime ORT_ENABLE_BASIC (offline)"


_INFO_FILE = "export.json"


@dataclass
class ExportedModel:
    onnx_path: Path
    id2label: dict[int, str]
    max_length: int
    input_names: list[str]
    facts: ExportFacts

    def save_info(self) -> None:
        """Record, beside the ONNX file, what :func:`load_exported` needs to skip the export."""
        info = {
            "id2label": {str(k): v for k, v in self.id2label.items()},
            "max_length": self.max_length,
            "input_names": self.input_names,
            "facts": asdict(self.facts),
        }
        atomic_write_text(self.onnx_path.parent / _INFO_FILE, json.dumps(info, indent=2) + "\n")


def load_exported(folder: Path) -> ExportedModel:
    """An export written by :func:`export_model` and recorded by ``save_info``."""
    info = json.loads((folder / _INFO_FILE).read_text(encoding="utf-8"))
    return ExportedModel(
        onnx_path=folder / ONNX_FILE,
        id2label={int(k): str(v) for k, v in info["id2label"].items()},
        max_length=int(info["max_length"]),
        input_names=[str(n) for n in info["input_names"]],
        facts=ExportFacts(**info["facts"]),
    )


def _load_model(
    model_name_or_path: str, revision: str | None, task: str, opset: int | None
) -> tuple[Any, str]:
    """The PyTorch model to export, in eval mode, and the attention implementation it exports with.

    SDPA attention exports only from opset 14 on; below it, and for architectures without an
    SDPA path, the eager attention is exported.
    """
    from quantsweep.tasks import get

    auto_model = get(task).model_class()
    attention = "eager" if opset is not None and opset < SDPA_MIN_OPSET else "sdpa"
    try:
        model = auto_model.from_pretrained(
            model_name_or_path, revision=revision, attn_implementation=attention
        )
    except ValueError as error:
        if "attn_implementation" not in str(error) and "sdpa" not in str(error).lower():
            raise _hub_hint(model_name_or_path, error) from error
        attention = "eager"
        model = auto_model.from_pretrained(
            model_name_or_path, revision=revision, attn_implementation=attention
        )
    except Exception as error:
        raise _hub_hint(model_name_or_path, error) from error
    model.eval()
    return model, attention


def export_model(
    model_name_or_path: str,
    revision: str | None,
    task: str,
    opset: int | None,
    optimization_level: int,
    out_dir: Path,
) -> ExportedModel:
    """Export to ``out_dir/model.onnx`` (and its info) at ``opset`` (None: the exporter's default) and optimize it."""
    import onnx
    from optimum.exporters.onnx import onnx_export_from_model

    start = time.perf_counter()
    model, attention = _load_model(model_name_or_path, revision, task, opset)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".export-") as tmp:
        onnx_export_from_model(model, tmp, opset=opset, task=task, do_validation=False)
        exported = Path(tmp) / "model.onnx"
        if any(Path(tmp).glob("*.onnx_data")) or any(Path(tmp).glob("*.data")):
            raise ModelLoadError(
                f"{model_name_or_path!r} exported with external weight files (over 2 GB); quantsweep supports "
                "single-file ONNX models only."
            )
        target = out_dir / ONNX_FILE
        applied = optimize_graph(exported, target, optimization_level)
    graph = onnx.load(str(target), load_external_data=False)
    initializers = {init.name for init in graph.graph.initializer}
    input_names = [i.name for i in graph.graph.input if i.name not in initializers]
    max_length = int(getattr(model.config, "max_position_embeddings", 512) or 512)
    written_opset = next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))
    facts = ExportFacts(
        opset=int(written_opset),
        optimization_level=optimization_level,
        optimization_applied=applied,
        attention_implementation=attention,
        model_type=str(model.config.model_type),
        model_revision=getattr(model.config, "_commit_hash", None),
        seconds=round(time.perf_counter() - start, 3),
    )
    id2label = {int(k): str(v) for k, v in model.config.id2label.items()}
    result = ExportedModel(
        onnx_path=target, id2label=id2label, max_length=max_length, input_names=input_names, facts=facts
    )
    result.save_info()
    return result
