"""The Hydra Launcher: thin, so that plugin discovery stays fast; the work is in ``_core``."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from hydra_plugins.quantsweep_sagemaker.config import LauncherConfigError, SageMakerLauncherConf


class SageMakerLauncher(Launcher):
    def __init__(self, **params: Any) -> None:
        self.settings = SageMakerLauncherConf(**params)
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hydra_plugins.quantsweep_sagemaker import _core  # the SageMaker SDK loads only now
        from hydra_plugins.quantsweep_sagemaker._bundle import BundleError
        from hydra_plugins.quantsweep_sagemaker._s3 import BucketError

        try:
            return _core.launch(self, job_overrides, initial_job_idx)
        except (LauncherConfigError, BundleError, BucketError) as error:
            from quantsweep.redaction import redact_uri

            # one paragraph for the user, not a traceback; nothing was uploaded yet. Redacted
            # whatever the message quotes (a value, an override): no password is printed
            print(f"\nquantsweep: {redact_uri(str(error))}", file=sys.stderr)
            raise SystemExit(2) from None
