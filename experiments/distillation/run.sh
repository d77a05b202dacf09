#!/usr/bin/env bash
# Knowledge distillation study: a pruned (PDP, 80 %) 8-bit fixed-point student, distilled from a
# float teacher (distillation=kd, loss kl_ce, T=4, alpha=0.9) vs trained alone, 3 seeds.
# Shortened schedule (the CPU is shared): 10 pretraining + 60 pruning (epsilon 0.05: the target
# is reached after 20) + 10 fine-tuning epochs; the teacher trains 80 float epochs.
# Usage: bash experiments/distillation/run.sh   (from the project root; ~10-20 min on 2 cores)
set -euo pipefail
OUT=${OUT:-outputs/experiments/distillation}
COMMON="data=digits tracking=none training.progress=false"
SCHEDULE="training.pretraining_epochs=10 training.epochs=60 training.fine_tuning_epochs=10 pruning.epsilon=0.05"
python -m pquant $COMMON pruning=none quantization=none training.pretraining_epochs=0 \
  training.epochs=80 seed=0 hydra.run.dir=$OUT/teacher
for seed in 1 2 3; do
  python -m pquant $COMMON $SCHEDULE seed=$seed hydra.run.dir=$OUT/alone_$seed
  python -m pquant $COMMON $SCHEDULE seed=$seed distillation=kd \
    distillation.teacher=$OUT/teacher hydra.run.dir=$OUT/kd_$seed
done
python experiments/distillation/table.py $OUT > experiments/distillation/results.md
