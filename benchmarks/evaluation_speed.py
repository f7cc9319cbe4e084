"""Evaluation speed: quantsweep's batched evaluation against a pipeline call per sentence.

The older tool behind the seed card scored the models the way ``evaluate``'s
token-classification evaluator does: words joined by spaces, transformers'
token-classification pipeline called once per sentence, each word labelled by the
prediction of the token that starts at the word's first character. This runs both
methods on the same fp32 ONNX model (through optimum's ORTModel for the pipeline) and
the same split, requires identical seqeval metrics, and compares their speed.
Goal: at least 5x faster.

Run: python benchmarks/evaluation_speed.py [--demo-root outputs/demo] [--split validation] [--threads N] [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _record import append

GOAL = 5.0


def per_sentence_pipeline(pipe: Any, sentences: list[list[str]]) -> list[list[str]]:
    """The evaluator's method: one pipeline call per sentence, labels mapped back by character offset."""
    predictions = []
    for words in sentences:
        starts, offset = [], 0
        for word in words:
            starts.append(offset)
            offset += len(word) + 1
        by_start = {entity["start"]: entity["entity"] for entity in pipe(" ".join(words))}
        predictions.append([by_start.get(start, "O") for start in starts])
    return predictions


def best_of(repeats: int, work: Callable[[], Any]) -> tuple[Any, float]:
    """The result and the fastest of ``repeats`` runs (the first also warms the session up)."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - start)
    return result, min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--demo-root", type=Path, default=Path("outputs/demo"))
    parser.add_argument("--split", default="validation")
    parser.add_argument(
        "--threads", type=int, default=None, help="intra-op threads (default: physical cores)"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--repeats", type=int, default=3, help="each method runs this often; the fastest counts"
    )
    args = parser.parse_args()

    from optimum.onnxruntime import ORTModelForTokenClassification
    from transformers import AutoConfig, AutoTokenizer, pipeline

    from quantsweep.config import DatasetConfig
    from quantsweep.demo.assets import prepare
    from quantsweep.export import export_model
    from quantsweep.sessions import SessionSettings, create_session
    from quantsweep.tasks.token_classification.rows import encode_sentences, load_split
    from quantsweep.tasks.token_classification.scoring import evaluate_model, score

    root = args.demo_root.resolve()
    prepare(root)
    model_dir = root / "model"
    data = load_split(DatasetConfig(path=str(root / "corpus")), args.split)
    work = Path(tempfile.mkdtemp(prefix="quantsweep-evalspeed-"))
    try:
        exported = export_model(str(model_dir), None, "token-classification", 11, 1, work)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        config = AutoConfig.from_pretrained(model_dir)
        id2label = {int(k): str(v) for k, v in config.id2label.items()}
        settings = SessionSettings.for_threads(args.threads)

        # quantsweep: length-sorted batches, each padded to its longest row; the session is
        # created once per job (and reused for timing), so it is left out, as the pipeline's is
        session = create_session(exported.onnx_path, settings)
        pad = tokenizer.pad_token_id or 0

        def batched() -> Any:
            encoded = encode_sentences(tokenizer, data.tokens, exported.max_length)
            return evaluate_model(session, data, encoded, id2label, args.batch_size, pad)

        def one_by_one() -> Any:  # for scale: the same code, one sentence per ONNX Runtime call
            encoded = encode_sentences(tokenizer, data.tokens, exported.max_length)
            return evaluate_model(session, data, encoded, id2label, 1, pad)

        ours, ours_seconds = best_of(args.repeats, batched)
        single, single_seconds = best_of(args.repeats, one_by_one)

        # the per-sentence pipeline on the same ONNX file, with the same thread count
        config.save_pretrained(work)
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.intra_op_threads
        ort_model = ORTModelForTokenClassification.from_pretrained(
            work, file_name=exported.onnx_path.name, session_options=options
        )
        pipe = pipeline("token-classification", model=ort_model, tokenizer=tokenizer)
        theirs_predictions, theirs_seconds = best_of(
            args.repeats, lambda: per_sentence_pipeline(pipe, data.tokens)
        )
        theirs = score(data.tags, theirs_predictions)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    same = (
        (ours.precision, ours.recall, ours.f1, ours.accuracy)
        == (theirs.precision, theirs.recall, theirs.f1, theirs.accuracy)
        == (single.precision, single.recall, single.f1, single.accuracy)
    )
    speedup = theirs_seconds / ours_seconds
    table = "\n".join(
        [
            "| method | seconds | sentences/s | precision | recall | f1 | accuracy |",
            "|---|---|---|---|---|---|---|",
            f"| pipeline, one call per sentence | {theirs_seconds:.2f} | {len(data) / theirs_seconds:.0f} | "
            f"{theirs.precision:.4f} | {theirs.recall:.4f} | {theirs.f1:.4f} | {theirs.accuracy:.4f} |",
            f"| quantsweep, batches of {args.batch_size} sorted by length | {ours_seconds:.2f} | "
            f"{len(data) / ours_seconds:.0f} | {ours.precision:.4f} | {ours.recall:.4f} | {ours.f1:.4f} | "
            f"{ours.accuracy:.4f} |",
            f"| for scale: the same, one sentence per ONNX Runtime call | {single_seconds:.2f} | "
            f"{len(data) / single_seconds:.0f} | {single.precision:.4f} | {single.recall:.4f} | "
            f"{single.f1:.4f} | {single.accuracy:.4f} |",
            "",
            f"Speed-up: **{speedup:.1f}x** (goal >= {GOAL:g}x); metrics identical: **{'yes' if same else 'NO'}**. "
            f"{len(data)} sentences of the demo corpus ({args.split}), demo model, fp32 ONNX, "
            f"{settings.intra_op_threads} intra-op threads for both, fastest of {args.repeats} runs each.",
        ]
    )
    print(table)
    command = "python benchmarks/evaluation_speed.py" + (f" --threads {args.threads}" if args.threads else "")
    append("Evaluation speed", command, table)
    if not same:
        raise SystemExit("The two methods disagree on the metrics; the speed comparison is void.")


if __name__ == "__main__":
    main()
