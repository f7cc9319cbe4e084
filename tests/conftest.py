from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# The suite never touches the network: Hub look-ups fail at once instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import loopback
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


@pytest.fixture(scope="session")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.write_classifier(tmp_path_factory.mktemp("models") / "classifier")


@pytest.fixture(scope="session")
def sentences_dir(classifier_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.write_classification_dataset(classifier_dir, tmp_path_factory.mktemp("data") / "sentences")


@pytest.fixture(scope="session")
def pairs_dir(classifier_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.write_classification_dataset(
        classifier_dir, tmp_path_factory.mktemp("data") / "pairs", pairs=True
    )


@pytest.fixture
def datasets_cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """datasets writes the Arrow copies of what it loads here, not into the user's cache."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")


# The suite's tiers, one folder each (README, "Development"): `pytest -m unit` is the fast lane.
TIERS = {
    "unit": "pure functions and records; no job, no server, no export of a whole job",
    "integration": "jobs on tiny models (forked from a pre-imported interpreter), caches, MLflow",
    "e2e": "the commands as a user runs them, each in a fresh interpreter",
    "launcher": "the SageMaker launcher against moto and the container harness",
}
# the order modules start in: a long module started last leaves the other worker idle
_TIER_ORDER = ("launcher", "e2e", "integration", "unit")


def pytest_configure(config: pytest.Config) -> None:
    for tier, what in TIERS.items():
        config.addinivalue_line("markers", f"{tier}: {what}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its folder's tier and group it with its module, longest tiers first.

    With ``--dist loadgroup`` (scripts/test.sh) a module runs on one xdist worker, so its
    module-scoped fixtures (an MLflow server, moto, a fine-tuned model) are built once, not
    once per worker. Within a tier, larger modules start first (a rough stand-in for longer).
    """
    root = Path(__file__).parent

    def tier(item: pytest.Item) -> str:
        folder = item.path.relative_to(root).parts[0]
        if folder not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: a test lives in one of the tier folders {sorted(TIERS)}")
        return folder

    for item in items:
        item.add_marker(getattr(pytest.mark, tier(item)))
        item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))
    position = {item.nodeid: index for index, item in enumerate(items)}
    items.sort(
        key=lambda item: (
            _TIER_ORDER.index(tier(item)),
            -item.path.stat().st_size,
            str(item.path),
            position[item.nodeid],
        )
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop this worker's pre-imported interpreter (quantsweep.testing.prewarmed)."""
    from quantsweep.testing import prewarmed

    prewarmed.stop()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real tracking server for the whole pytest run (one per xdist worker that needs one:
    starting one takes 10 to 30 s on 2 busy cores). Tests share it, so each logs to an
    experiment of its own name."""
    with loopback.mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as url:
        yield url
