#!/usr/bin/env bash
# The offline demo, from a fresh clone: install (with the demo model's package), generate
# the demo corpus, fine-tune the demo model (cached after the first time), then run the
# seed card's 8 configs on it. No network needed beyond the package registry.
#   bash scripts/demo.sh                                    # token classification (NER)
#   EXPERIMENT=demo_classification bash scripts/demo.sh     # sentence classification
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/install.sh ".[dev,demo]"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
experiment=${EXPERIMENT:-demo}
sweep_dir=${SWEEP_DIR:-outputs/sweeps/${experiment}-$(date +%Y-%m-%d_%H-%M-%S)}
.venv/bin/quantsweep --multirun +experiment="$experiment" hydra.sweep.dir="$sweep_dir" "$@"
echo
echo "Demo finished in $(( $(date +%s) - start )) s."
echo "Demo models and corpora: outputs/demo/  (validation scores in outputs/demo/*model/quantsweep-demo.json)"
echo "Sweep results (one folder per job, each with results.json): $sweep_dir"
echo "The sweep's card: $sweep_dir/README.md (with results.csv and plots beside it)"
echo "MLflow store: outputs/mlflow.db; browse it with: .venv/bin/mlflow ui --backend-store-uri sqlite:///outputs/mlflow.db --host 127.0.0.1"
