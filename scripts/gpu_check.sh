#!/usr/bin/env bash
# One-go GPU check (issue 11): the CUDA tests, a three-epoch run on the GPU and the training-step
# benchmark against plain torch on CUDA. Run from the repository root on a machine with CUDA:
#   bash scripts/gpu_check.sh            (results also copied to $OUT when it is set)
# Needs torch with CUDA; installs pquant into a throw-away venv that sees the system packages.
set -uo pipefail
cd "$(dirname "$0")/.."
export MLFLOW_DISABLE_TELEMETRY=true PIP_DISABLE_PIP_VERSION_CHECK=1
unset PQUANT_KERNELS  # the default: a CUDA run must neither build nor use the CPU kernels
export TORCH_EXTENSIONS_DIR="$(mktemp -d)"
log="${OUT:-.}/gpu_check.log"
: > "$log"
say() { echo "== $*" | tee -a "$log"; }
python3 -m venv --system-site-packages .gpu-venv && .gpu-venv/bin/pip install -q --no-deps -e . \
  && .gpu-venv/bin/pip install -q "pytest>=7" "hypothesis>=6" 2>&1 | tail -2
py=.gpu-venv/bin/python
say "device"
$py -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))" 2>&1 | tee -a "$log"
say "pytest -m cuda"
$py -m pytest -m cuda -q -p no:cacheprovider tests/cuda 2>&1 | tail -15 | tee -a "$log"
tests=${PIPESTATUS[0]}
say "python -m pquant device=cuda (3 epochs)"
start=$(date +%s)
(cd "$(mktemp -d)" && "$OLDPWD/$py" -m pquant device=cuda training.epochs=3 \
  training.pretraining_epochs=1 tracking=none 2>&1 && find outputs -name report.json -exec cat {} +) \
  | tail -40 | tee -a "$log"
run=${PIPESTATUS[0]}
echo "wall $(( $(date +%s) - start )) s" | tee -a "$log"
say "kernel cache after the CUDA runs (must be empty)"
ls -A "$TORCH_EXTENSIONS_DIR" | tee -a "$log"
say "bench_step on CUDA (compressed / plain torch)"
$py scripts/bench_step.py --device cuda --reps 200 2>&1 | tee -a "$log"
$py scripts/bench_step.py --device cuda --reps 200 quantization=hgq 2>&1 | tee -a "$log"
say "CPU: fused kernels (OpenMP) at 1 and 2 threads, measured together"
export TORCH_EXTENSIONS_DIR="$(mktemp -d)"
PQUANT_KERNELS=on $py -m pquant.kernels 2>&1 | tail -2 | tee -a "$log"
$py scripts/bench_step.py --threads 1,2 --reps 300 2>&1 | tee -a "$log"
$py scripts/bench_step.py --threads 1,2 --reps 300 quantization=hgq 2>&1 | tee -a "$log"
say "result: tests rc=$tests, run rc=$run"
[ "$tests" -eq 0 ] && [ "$run" -eq 0 ]
