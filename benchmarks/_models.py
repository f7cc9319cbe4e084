"""A DistilBERT-base-sized token classifier for the speed and memory benchmarks.

Random weights (speed and memory do not depend on them), the real uncased WordPiece
tokenizer of the demo model, and the demo's label set, so that the demo corpus feeds it
realistic sentences. Built locally, once, under ``outputs/benchmarks/``.
"""

from __future__ import annotations

from pathlib import Path


def distilbert_base(demo_root: Path, out: Path = Path("outputs/benchmarks/distilbert-base-random")) -> Path:
    """The model folder (written on first use): 6 layers, hidden 768, 12 heads, FFN 3072."""
    if (out / "config.json").is_file():
        return out.resolve()
    import torch
    from transformers import AutoConfig, AutoTokenizer, DistilBertConfig, DistilBertForTokenClassification

    demo_model = demo_root / "model"
    tokenizer = AutoTokenizer.from_pretrained(demo_model)
    labels = AutoConfig.from_pretrained(demo_model).id2label
    torch.manual_seed(0)
    config = DistilBertConfig(
        vocab_size=tokenizer.vocab_size,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )  # the defaults are distilbert-base-uncased's sizes
    model = DistilBertForTokenClassification(config)
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out)
    return out.resolve()
