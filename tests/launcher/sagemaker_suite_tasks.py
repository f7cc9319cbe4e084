"""Module-level stand-ins for the closures of Hydra's LauncherTestSuite, for the SageMaker launcher.

The suite hands a launcher closures (``task_func`` inside ``get_task_function`` and inside
``test_sweep_with_custom_resolver``), wrapped in a ``SweepTaskFunction`` object. No import
path names a closure, and the SageMaker launcher sends a job as data, the task named by its
import path, so it refuses them (``test_a_task_no_import_path_names_is_refused``). These
functions do what those closures do. No installed package provides this module, so the
launcher ships its source file with each job, as it does for a script run as ``__main__``.
"""

from __future__ import annotations

from typing import Any


def return_100(cfg: Any) -> Any:
    return 100


def return_x(cfg: Any) -> Any:
    return cfg.x
