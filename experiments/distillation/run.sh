#!/usr/bin/env bash
# Knowledge distillation study: a pruned (PDP, 80 %) 8-bit fixed-point student, distilled from a
# float teacher (distillation=kd, loss kl_ce, T=4, alpha=0.9) vs trained alone, 3 seeds.
# Shortened schedule (the CPU was shared by many jobs): 3 pretraining + 12 pruning (epsilon 0.25:
# the target is reached after 4) + 3 fine-tuning epochs; the teacher trains 80 float epochs.
# Usage: bash experiments/distillation/run.sh   (from the project root; the student runs of one
# seed go in parallel)
set -euo pipefail
OUT=${OUT:-outputs/experiments/distillation}
COMMON="data=digits tracking=none training.progress=false"
SCHEDULE="training.pretraining_epochs=3 training.epochs=12 training.fine_tuning_epochs=3 pruning.epsilon=0.25"
[ -f $OUT/teacher/report.json ] || python -m pquant $COMMON pruning=none quantization=none \
  training.pretraining_epochs=0 training.epochs=80 seed=0 hydra.run.dir=$OUT/teacher
for seed in 1 2 3; do
  python -m pquant $COMMON $SCHEDULE seed=$seed hydra.run.dir=$OUT/alone_$seed &
  python -m pquant $COMMON $SCHEDULE seed=$seed distillation=kd \
    distillation.teacher=$OUT/teacher hydra.run.dir=$OUT/kd_$seed &
  wait
done
python experiments/distillation/table.py $OUT > experiments/distillation/results.md
