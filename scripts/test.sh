#!/usr/bin/env bash
# Install quantsweep as a (non-editable) wheel, then lint, type-check and run the test suite offline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh ".[dev,demo]"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
