#!/usr/bin/env bash
# Install quantsweep as a (non-editable) wheel, then lint, type-check and run the test suite offline.
set -euo pipefail
cd "$(dirname "$0")/.."
# --no-compile: below, PYTHONPYCACHEPREFIX sends every interpreter's bytecode to .venv/.cache,
# where Python reads it from too, so the .pyc files pip would write beside the installed
# sources are never read; compiling them took 83 s of a 2-core machine (2026-11-30,
# compileall over the 22 000 files of .venv's site-packages). Later runs compile on import.
bash scripts/install.sh "--no-compile .[dev,demo]"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# The tools' caches and bytecode go under .venv/, so that the work tree holds only what git tracks.
cache=.venv/.cache
export RUFF_CACHE_DIR=$cache/ruff MYPY_CACHE_DIR=$cache/mypy PYTHONPYCACHEPREFIX=$PWD/$cache/pycache
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# Two workers: most tests wait on subprocesses, servers and single-threaded Python start-up,
# so two of them share 2 cores well (measured: 6.6 min instead of 10.4 for the suite). Three
# gained nothing measurable (clean-clone CI of 2026-11-30: pytest 22:44 against 23:05).
# loadgroup: each module on one worker (tests/conftest.py groups them), so module fixtures are built once
.venv/bin/python -m pytest -n 2 --dist loadgroup -o cache_dir=$cache/pytest "$@"
