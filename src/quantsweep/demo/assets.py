"""Prepare the demo's corpus and model once, before a run or sweep uses them.

``+experiment=demo`` registers :class:`PrepareDemo` as a Hydra callback, so the corpus is
generated and the model fine-tuned (or found in the cache) before the first job starts,
in the launching process, once per sweep. ``+experiment=demo_classification`` does the
same for the sentence-classification demo with :class:`PrepareClassificationDemo`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

log = logging.getLogger(__name__)


def prepare(root: Path) -> dict[str, Any]:
    """Write ``root/corpus`` and ``root/model`` unless they are current; returns the model info."""
    from quantsweep.demo.corpus import write_corpus
    from quantsweep.demo.finetune import finetune

    corpus = write_corpus(root / "corpus")
    info = finetune(corpus, root / "model")
    log.info(
        "Demo model ready: validation F1 %.3f after %s fine-tuning steps (%s)",
        info["validation_f1"],
        info["steps"],
        root / "model",
    )
    return info


def prepare_classification(root: Path) -> dict[str, Any]:
    """Write ``root/classification_corpus`` and ``root/classification_model`` unless current.

    Returns the model info: validation accuracy and macro F1, steps, seconds and the
    class balance of every split.
    """
    from quantsweep.demo.classification import finetune_classifier, write_classification_corpus

    corpus = write_classification_corpus(root / "classification_corpus")
    info = finetune_classifier(corpus, root / "classification_model")
    log.info(
        "Demo classifier ready: validation accuracy %.3f, macro F1 %.3f after %s fine-tuning steps (%s)",
        info["validation_accuracy"],
        info["validation_macro_f1"],
        info["steps"],
        root / "classification_model",
    )
    return info


class PrepareDemo(Callback):
    def __init__(self, root: str) -> None:
        self.root = Path(root)

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        prepare(self.root)

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        prepare(self.root)


class PrepareClassificationDemo(Callback):
    def __init__(self, root: str) -> None:
        self.root = Path(root)

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        prepare_classification(self.root)

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        prepare_classification(self.root)


def main() -> None:
    import argparse

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description="Generate the demo corpus and fine-tune the demo model.")
    parser.add_argument("root", nargs="?", default="outputs/demo", type=Path)
    parser.add_argument(
        "--classification",
        action="store_true",
        help="prepare the sentence-classification demo (classification_corpus, classification_model) instead",
    )
    args = parser.parse_args()
    info = prepare_classification(args.root) if args.classification else prepare(args.root)
    print(info)


if __name__ == "__main__":
    main()
