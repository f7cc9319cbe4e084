"""Prepare the demo's corpus and model once, before a run or sweep uses them.

``+experiment=demo`` registers :class:`PrepareDemo` as a Hydra callback, so the corpus is
generated and the model fine-tuned (or found in the cache) before the first job starts,
in the launching process, once per sweep.
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


class PrepareDemo(Callback):
    def __init__(self, root: str) -> None:
        self.root = Path(root)

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        prepare(self.root)

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        prepare(self.root)


def main() -> None:
    import argparse

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description="Generate the demo corpus and fine-tune the demo model.")
    parser.add_argument("root", nargs="?", default="outputs/demo", type=Path)
    info = prepare(parser.parse_args().root)
    print(info)


if __name__ == "__main__":
    main()
