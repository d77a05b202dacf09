#!/usr/bin/env bash
# The pruning-methods study: all seven methods, 8-bit fixed point, 3 seeds, on the digits MLP and
# on the digits CNN; then the tables and plots from the MLflow store.
set -euo pipefail
cd "$(dirname "$0")/../.."
export MLFLOW_DISABLE_TELEMETRY=true
METHODS=cs,dst,pdp,wanda,autosparse,activation_pruning,mdmm
python -m pquant -m pruning=$METHODS seed=1,2,3 \
    tracking.experiment_name=pruning_methods_mlp hydra.sweep.dir=outputs/multirun/pruning_methods_mlp
python -m pquant -m model=cnn pruning=$METHODS seed=1,2,3 \
    tracking.experiment_name=pruning_methods_cnn hydra.sweep.dir=outputs/multirun/pruning_methods_cnn
python -m pquant.compare --experiment pruning_methods_mlp --out experiments/pruning_methods/mlp
python -m pquant.compare --experiment pruning_methods_cnn --out experiments/pruning_methods/cnn
