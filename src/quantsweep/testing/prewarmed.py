"""Run ``python -m module`` in a forked copy of an interpreter that has already imported torch & co.

A quantsweep job spends about 17 of its 20 seconds on a tiny model importing torch,
transformers, optimum, ONNX Runtime and datasets (2026-12-03, 2 cores). The suite runs some
fifty jobs as a user would, in a process of their own, so that exit codes, one-paragraph
errors, Hydra's global state and the working directory are those of a real run. This module
keeps that isolation and drops the imports: one *zygote* interpreter per pytest worker imports
the heavy libraries once, and each run is a ``fork`` of it that sets its working directory,
environment, ``sys.argv`` and standard streams, then runs the module as ``python -m`` would.

What a fork cannot give is an import under another environment: libraries read some variables
(``HF_HOME``, ``HF_HUB_OFFLINE``, ``PYTHONPATH``, thread counts ...) once, at import. A run whose
environment differs from the zygote's in any such variable therefore gets a fresh interpreter,
and so does every run while ``QUANTSWEEP_TEST_FRESH=1`` is set (which runs the whole suite the
slow way, to compare). The CLI's own contract tests ask for a fresh interpreter explicitly.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO

# Variables some library reads when it is imported: a run that changes one needs a fresh import.
IMPORT_TIME_PREFIXES = (
    "HF_",
    "HUGGINGFACE",
    "TRANSFORMERS",
    "DATASETS",
    "TOKENIZERS",
    "TORCH",
    "OMP_",
    "MKL_",
    "OPENBLAS",
    "PYTHON",
    "LD_",
    "MLFLOW",
    "ORT_",
)
FRESH_VARIABLE = "QUANTSWEEP_TEST_FRESH"

# The zygote: imports what a job imports, then forks one child per request line on stdin.
_ZYGOTE = r"""
import atexit, json, os, runpy, signal, sys, traceback
import torch, transformers, onnxruntime, onnx, datasets, optimum.exporters.onnx  # noqa: F401
import onnxruntime.quantization, optimum.onnxruntime, sklearn.metrics, seqeval.metrics  # noqa: F401
from optimum.exporters.onnx import main_export  # noqa: F401
# transformers imports its classes lazily, on first use: use them here, once
from transformers import (  # noqa: F401
    AutoConfig, AutoTokenizer, AutoModelForTokenClassification, AutoModelForSequenceClassification,
    BertForTokenClassification, BertForSequenceClassification, DistilBertForTokenClassification,
    DistilBertForSequenceClassification, BertTokenizerFast, DistilBertTokenizerFast,
)
import hydra, omegaconf, quantsweep.cli, quantsweep.job  # noqa: F401

def child(request):
    os.setpgrp()  # a timeout kills the run and whatever it started
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], os.O_WRONLY), (2, request["stderr"], os.O_WRONLY)):
        handle = os.open(path, flags)
        os.dup2(handle, fd)
        os.close(handle)
    for signum in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(signum, signal.SIG_DFL)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = [request["module"], *request["args"]]
    sys.path[0] = request["cwd"]  # as `python -m` puts the working directory first
    # run as __main__ from its source, as `python -m` does, not the copy the zygote imported
    sys.modules.pop(request["module"], None)
    code = 0
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        if stop.code is None:
            code = 0
        elif isinstance(stop.code, int):
            code = stop.code
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
        atexit._run_exitfuncs()  # what the interpreter runs at exit (logging.shutdown, MLflow's flush)
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)

for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        try:
            child(request)
        finally:
            os._exit(70)
    print(json.dumps({"pid": pid}), flush=True)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), flush=True)
"""


def _import_time_environment(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.upper().startswith(IMPORT_TIME_PREFIXES)}


class Zygote:
    """One pre-imported interpreter; runs one module at a time in a fork of itself."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = dict(env)
        self._process = subprocess.Popen(
            [sys.executable, "-c", _ZYGOTE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=self.env,
            text=True,
        )
        self._lock = threading.Lock()

    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    def serves(self, env: dict[str, str]) -> bool:
        """Whether a run with ``env`` imports what the zygote imported: the same import-time variables."""
        return _import_time_environment(env) == _import_time_environment(self.env)

    def run(
        self, module: str, args: list[str], cwd: Path, env: dict[str, str], timeout: float
    ) -> subprocess.CompletedProcess[str] | None:
        """The finished run, or None when the zygote is busy (a run from another thread)."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            return self._run(module, args, cwd, env, timeout)
        finally:
            self._lock.release()

    def _run(
        self, module: str, args: list[str], cwd: Path, env: dict[str, str], timeout: float
    ) -> subprocess.CompletedProcess[str]:
        with tempfile.TemporaryDirectory(prefix="quantsweep-fork-") as streams:
            out, err = Path(streams) / "stdout", Path(streams) / "stderr"
            out.touch()
            err.touch()
            request = {
                "module": module,
                "args": args,
                "cwd": str(Path(cwd).resolve()),
                "env": env,
                "stdout": str(out),
                "stderr": str(err),
            }
            assert self._process.stdin is not None and self._process.stdout is not None
            self._process.stdin.write(json.dumps(request) + "\n")
            self._process.stdin.flush()
            pid = int(json.loads(self._readline(self._process.stdout, 120))["pid"])
            try:
                reply = self._readline(self._process.stdout, timeout)
            except subprocess.TimeoutExpired:
                os.killpg(pid, signal.SIGKILL)
                self._readline(self._process.stdout, 60)
                raise subprocess.TimeoutExpired(
                    [module, *args], timeout, out.read_text(errors="replace"), err.read_text(errors="replace")
                ) from None
            return subprocess.CompletedProcess(
                [sys.executable, "-m", module, *args],
                int(json.loads(reply)["returncode"]),
                out.read_text(encoding="utf-8", errors="replace"),
                err.read_text(encoding="utf-8", errors="replace"),
            )

    @staticmethod
    def _readline(stream: IO[str], timeout: float) -> str:
        ready, _, _ = select.select([stream], [], [], timeout)
        if not ready:
            raise subprocess.TimeoutExpired("zygote", timeout)
        line = stream.readline()
        if not line:
            raise RuntimeError("the pre-imported interpreter (quantsweep.testing.prewarmed) died")
        return line

    def close(self) -> None:
        if self._process.poll() is None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


_zygote: Zygote | None = None


def run(
    module: str, args: list[str], cwd: Path, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str] | None:
    """``python -m module args`` from the pre-imported interpreter, or None when it cannot serve ``env``."""
    global _zygote
    if os.environ.get(FRESH_VARIABLE) == "1" or not hasattr(os, "fork"):
        return None
    if _zygote is None or not _zygote.alive:
        _zygote = Zygote(env)  # the first run's environment is the one most runs share
    if not _zygote.serves(env):
        return None  # another import-time environment: this run imports afresh
    return _zygote.run(module, args, cwd, env, timeout)


def stop() -> None:
    """Stop the zygote (pytest's session end calls this)."""
    global _zygote
    if _zygote is not None:
        _zygote.close()
        _zygote = None
