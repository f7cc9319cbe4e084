"""The task side of checking a config: is ``task`` one quantsweep has, and do the columns fit it.

The schema (:mod:`quantsweep.config`) knows nothing of tasks, so that it stays at the
bottom of the package; these checks run where a composed or saved config becomes a
:class:`RunConfig` (:func:`quantsweep.cli.to_run_config`, which ``quantsweep-reproduce``
goes through too) and again when a job starts from one built in Python
(:meth:`quantsweep.stages.context.JobRun.start`), before any work. They raise the schema's
:class:`~quantsweep.config.ConfigError`, worded as its own checks word theirs.
"""

from __future__ import annotations

from quantsweep.config import RunConfig
from quantsweep.config.base import invalid
from quantsweep.tasks import TASKS, get

# the config's `task` values, in the order an unknown task's error lists them
SUPPORTED_TASKS: tuple[str, ...] = tuple(TASKS)


def check_task(cfg: RunConfig) -> None:
    """Refuse an unknown ``task``, or ``dataset.data_keys``/``ref_keys`` the task cannot read."""
    if cfg.task not in SUPPORTED_TASKS:
        raise invalid("task", cfg.task, f"supported: {', '.join(SUPPORTED_TASKS)}.")
    wrong = get(cfg.task).check_columns(cfg.dataset)
    if wrong is not None:
        key, allowed = wrong
        value = list(cfg.dataset.ref_keys) if key == "dataset.ref_keys" else dict(cfg.dataset.data_keys)
        raise invalid(key, value, allowed)
