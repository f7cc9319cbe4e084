"""Where a job's runs go: the tracking store, the experiment and the run's name.

Every part of the tracking code, and the launchers that log a job brought home, read these
from the same few functions, so that a job logged at the end of a run and one relogged
later with ``quantsweep-log`` land in the same experiment under the same name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from quantsweep.config import GROUPS, MlflowConfig

DEFAULT_TRACKING_URI = "sqlite:///outputs/mlflow.db"
DEFAULT_ARTIFACTS = "outputs/mlartifacts"


def tracking_uri(settings: MlflowConfig) -> str:
    return settings.tracking_uri or DEFAULT_TRACKING_URI


def experiment_name(settings: MlflowConfig, config: dict[str, Any]) -> str:
    if settings.experiment_name:
        return settings.experiment_name
    model = Path(str(config.get("model_name_or_path", "model"))).name
    dataset = Path(str(config.get("dataset", {}).get("path", "data"))).name
    return f"quantsweep {model} on {dataset}"


def run_name(choices: dict[str, str]) -> str:
    return "-".join(choices[g] for g in GROUPS if g in choices) or "run"


def settings_from_job(job_dir: Path) -> MlflowConfig:
    saved = yaml.safe_load((job_dir / ".hydra" / "config.yaml").read_text(encoding="utf-8")) or {}
    values = saved.get("mlflow") or {}
    return MlflowConfig(**{k: v for k, v in values.items() if k in MlflowConfig.__dataclass_fields__})
