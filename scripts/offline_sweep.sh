#!/usr/bin/env bash
# Install quantsweep, write a tiny random-weight model and tiny CoNLL data, and run the
# seed card's 8-job sweep on them: the whole pipeline, offline, in a few minutes.
# The accuracy of a random model means nothing; the demo model comes with the offline demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh ".[dev]"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/python -m quantsweep.testing outputs/tiny
sweep_dir=outputs/sweeps/offline-smoke
.venv/bin/quantsweep --multirun +experiment=seed_card \
  model_name_or_path=outputs/tiny/tiny-distilbert dataset.path=outputs/tiny/tiny-conll \
  benchmark.duration=1 hydra.sweep.dir="$sweep_dir" "$@"
echo
echo "Sweep finished: one folder per job with results.json under $sweep_dir"
ls -1 "$sweep_dir"
