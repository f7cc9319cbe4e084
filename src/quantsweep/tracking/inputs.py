"""The rows a job used, as MLflow dataset inputs: metadata only, never the rows themselves.

A run names the evaluation, calibration and held-out rows it used, each with the
fingerprint of exactly those rows and their count, so that two runs can be seen to have
used the same data without any of it leaving the machine.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any


def rows_dataset(source: Any, name: str, digest: str, rows: int) -> Any:
    """An MLflow dataset of metadata only (never the rows), whose profile is its row count."""
    from mlflow.data.meta_dataset import MetaDataset

    class RowsDataset(MetaDataset):
        @property
        def profile(self) -> dict[str, int]:
            return {"num_rows": rows}

        def to_dict(self) -> dict[str, str]:
            config = super().to_dict()
            config["profile"] = json.dumps(self.profile)
            return config

    return RowsDataset(source=source, name=name, digest=digest)


def dataset_inputs(results: dict[str, Any]) -> list[tuple[Any, str, dict[str, str]]]:
    """(dataset, context, tags) for the evaluation, calibration and held-out rows of a job.

    Each is named ``<dataset>/<split>`` with the fingerprint of exactly the rows used as
    its digest and their count as its profile; the source is the Hub dataset (path,
    config, split, revision) or the local path, as configured.
    """
    block = results.get("dataset") or {}
    data = results["config"].get("dataset") or {}
    path = str(data.get("path") or block.get("source") or "data")
    hub = str(block.get("source", "")).startswith("hub:")
    base = path.rstrip("/").rsplit("/", 1)[-1] or path
    inputs = []
    for context, split, rows, fingerprint in _row_sets(results):
        if not fingerprint or rows is None:
            continue
        source = _hub_source(path, data, split) if hub else _local_source(path)
        name = f"{base}/{split}" + (" (held out)" if context == "holdout" else "")
        inputs.append(
            (
                rows_dataset(source, name, str(fingerprint), int(rows)),
                context,
                {"quantsweep.split": str(split)},
            )
        )
    return inputs


def _row_sets(results: dict[str, Any]) -> tuple[tuple[str, Any, Any, Any], ...]:
    """(context, split, row count, fingerprint) of the evaluation, calibration and held-out rows."""
    block = results.get("dataset") or {}
    holdout_split = (results["config"].get("exclusion") or {}).get("holdout_split") or block.get(
        "calibration_split"
    )
    return (
        ("evaluation", block.get("eval_split"), block.get("eval_samples"), block.get("eval_fingerprint")),
        (
            "calibration",
            block.get("calibration_split"),
            block.get("calibration_samples"),
            block.get("calibration_fingerprint"),
        ),
        ("holdout", holdout_split, block.get("holdout_samples"), block.get("holdout_fingerprint")),
    )


def _hub_source(path: str, data: dict[str, Any], split: Any) -> Any:
    """The Hub dataset (path, config, split, revision) the rows came from."""
    from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource

    return HuggingFaceDatasetSource(
        path=path, config_name=data.get("name"), split=split, revision=data.get("revision")
    )


def _local_source(path: str) -> Any:
    """The local folder or file the rows came from."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    local = Path(path).expanduser()
    with warnings.catch_warnings():  # "can be interpreted in multiple ways": all mean a local path
        warnings.simplefilter("ignore")
        return resolve_dataset_source(str(local.resolve() if local.exists() else local))
