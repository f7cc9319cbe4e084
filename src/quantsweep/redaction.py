"""Secrets never leave the machine: what counts as one, and how it is blanked.

A config may hold values under secret-named keys (a token, a password), and a tracking URI
may carry basic-auth credentials (``http://user:password@host``). Everything that sends a
config, a log line or a file elsewhere (MLflow, a SageMaker job, a card, an error
message) passes it through here first, so that one pattern decides what a secret is.
This module sits at the bottom: the local run, the tracking code and the SageMaker
launcher all use it, and it depends on none of them.
"""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from quantsweep.files import atomic_write_text

SECRET_KEY = re.compile(
    r"(token|secret|password|passwd|credential|api[_-]?key|access[_-]?key)", re.IGNORECASE
)
# user:password@ in a URL (a tracking URI may carry basic-auth credentials)
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")
# the files whose text is checked for credentials before they are uploaded
_TEXT_SUFFIXES = (".yaml", ".json", ".log", ".md", ".csv", ".txt")


def redact(flat: dict[str, Any]) -> dict[str, Any]:
    """Values under keys that name secrets, and credentials inside URLs, never leave the machine."""
    return {
        k: (
            "***"
            if SECRET_KEY.search(k) and v not in (None, "")
            else redact_uri(v)
            if isinstance(v, str)
            else v
        )
        for k, v in flat.items()
    }


def redact_uri(text: str) -> str:
    """``http://user:password@host`` shown as ``http://***@host``."""
    return _URL_CREDENTIALS.sub("***@", text)


def yaml_files(folder: Path | None, pattern: str = "*.yaml") -> list[Path]:
    return sorted(folder.glob(pattern)) if folder is not None and folder.is_dir() else []


def scrub_config_files(folder: Path | None, pattern: str = "*.yaml") -> None:
    """Redact secret-looking values from the config files Hydra saved before any job code ran.

    A job's ``.hydra/*.yaml``, and a sweep's ``multirun.yaml`` (Hydra's sweeper writes it
    before it hands the launcher the jobs: the SageMaker launcher scrubs it then, and each
    local job again as it starts, which costs a read when it is clean).
    """
    for path in yaml_files(folder, pattern):
        lines = path.read_text(encoding="utf-8").splitlines()
        # secret-named keys, and the user:password@ of a URL (a tracking URI) wherever it stands
        scrubbed = [redact_uri(_scrub_line(line, SECRET_KEY)) for line in lines]
        if scrubbed != lines:
            atomic_write_text(path, "\n".join(scrubbed) + "\n")


def _scrub_line(line: str, secret: re.Pattern[str]) -> str:
    """Blank the value of every `key: value` or `key=value` whose key names a secret."""

    def blank(match: re.Match[str]) -> str:
        key = match.group(1)
        return f"{key}{match.group(2)}'***'" if secret.search(key) else match.group(0)

    value = r"('[^']*'|\"[^\"]*\"|[^,\s]+)"
    line = re.sub(r"([\w.+~-]+)(=)" + value, blank, line)  # overrides: a=b,c=d
    return re.sub(r"([\w.+~-]+)(: )" + value, blank, line)  # YAML: key: value


class RedactCredentials(logging.Filter):
    """Shows ``user:password@`` in a logged URL as ``***@``."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_uri(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def redact_launcher_log() -> None:
    """Hydra's basic launcher logs each job's overrides, a tracking URI's credentials included."""
    launcher = logging.getLogger("hydra._internal.core_plugins.basic_launcher")
    if not any(isinstance(existing, RedactCredentials) for existing in launcher.filters):
        launcher.addFilter(RedactCredentials())


@contextlib.contextmanager
def shareable(path: Path) -> Iterator[Path]:
    """The file as it may leave the machine: a copy without URL credentials, if it has any.

    Hydra's saved config, results.json and the card repeat the tracking URI as it was given.
    """
    if path.suffix not in _TEXT_SUFFIXES:
        yield path
        return
    text = path.read_text(encoding="utf-8", errors="replace")
    clean = redact_uri(text)
    if clean == text:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="quantsweep-") as folder:
        copy = Path(folder) / path.name
        copy.write_text(clean, encoding="utf-8")
        yield copy
