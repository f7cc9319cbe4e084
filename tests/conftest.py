from __future__ import annotations

import os
from pathlib import Path

import pytest

# The suite never touches the network: Hub look-ups fail at once instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import quantsweep.testing as tiny


@pytest.fixture(scope="session")
def distilbert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.write_model(tmp_path_factory.mktemp("models") / "distilbert", "distilbert")


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.write_model(tmp_path_factory.mktemp("models") / "bert", "bert")


@pytest.fixture(scope="session")
def conll_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.write_dataset(tmp_path_factory.mktemp("data") / "conll")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The modules with the most end-to-end (slow) tests first, and those tests first in each.

    pytest-xdist hands tests out in this order: a multi-minute test started last would
    leave one worker busy while the other idles. Each module's tests stay together, so
    module-scoped fixtures (an MLflow server, a fine-tuned model) are not set up twice.
    """

    def module(item: pytest.Item) -> str:
        return item.nodeid.split("::", 1)[0]

    slow_per_module: dict[str, int] = {}
    for item in items:
        slow = item.get_closest_marker("slow") is not None
        slow_per_module[module(item)] = slow_per_module.get(module(item), 0) + slow
    position = {item.nodeid: index for index, item in enumerate(items)}
    items.sort(
        key=lambda item: (
            -slow_per_module[module(item)],
            module(item),
            item.get_closest_marker("slow") is None,
            position[item.nodeid],
        )
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop this worker's pre-imported interpreter (quantsweep.testing.prewarmed)."""
    from quantsweep.testing import prewarmed

    prewarmed.stop()
