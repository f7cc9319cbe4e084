"""What every config section shares: the error a user sees, and the check every section runs first.

Each group's dataclass (``run``, ``dataset``, ``quantization``, ``exclusion``) derives from
:class:`_Section`, so that nan and inf are refused in one place for every float key, and
raises :class:`ConfigError` through :func:`invalid`, so that every message names the key,
the value and what is allowed in one paragraph. Nothing here imports a heavy library.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, fields
from typing import Any, ClassVar


class ConfigError(ValueError):
    """A configuration value that cannot run; the message is meant for the user as is."""


def invalid(key: str, value: Any, allowed: str) -> ConfigError:
    """The error for ``key`` holding ``value``, in the one wording every config check uses."""
    return ConfigError(f"Invalid configuration: `{key}` is {value!r}; {allowed}")


class _Section:
    """A config section (each group's dataclass): ``__post_init__`` refuses nan and inf in every
    float field, then runs the section's own :meth:`check`.

    Once for every key rather than key by key: nan compares false with every bound, so a
    check such as ``duration <= 0`` lets it through (a timing loop that never ends, a time
    limit that never fires), and inf passes every lower bound.
    """

    # the section's dotted prefix in the config, e.g. "benchmark"; "" for the root
    KEY: ClassVar[str] = ""

    def __post_init__(self) -> None:
        _refuse_non_finite(self)
        self.check()

    def check(self) -> None:
        """The section's own checks; every float is finite by then."""


def _refuse_non_finite(section: Any) -> None:
    prefix = f"{section.KEY}." if section.KEY else ""
    for item in fields(section):
        value = getattr(section, item.name)
        entries = value if isinstance(value, list) else [value]
        if not any(isinstance(v, float) and not math.isfinite(v) for v in entries):
            continue
        default = item.default if item.default is not MISSING else None
        if item.default_factory is not MISSING:
            default = item.default_factory()
        nullable = ", or null" if "None" in str(item.type) else ""
        raise invalid(
            f"{prefix}{item.name}",
            value,
            "every numeric key takes a finite number, never nan or inf (they slip past range checks: a timing "
            f"window of nan seconds never ends); give a finite number{nullable}; the default is "
            f"{'null' if default is None else repr(default)}.",
        )


def _blank(value: Any) -> bool:
    return isinstance(value, str) and not value.strip()
