"""Wall time of an 8-trial Optuna study: joblib launcher with 2 workers vs the serial launcher.

Each study runs the digits MLP (PDP + 8-bit fixed point) for a short schedule per trial, as
subprocesses of ``python -m pquant -m hydra/sweeper=pquant_optuna ...``; both studies use the random
sampler with the same seed, so they run the same 8 trials.

Usage: python scripts/bench_sweep.py [--trials 8] [--workers 2] [--epochs 150] [--batch 8]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def study(tmp: Path, name: str, trials: int, workers: int, epochs: int, parallel: bool,
          batch: int) -> float:
    args = [sys.executable, "-m", "pquant", "-m", "hydra/sweeper=pquant_optuna",
            "hydra/sweeper/pquant_sampler=random", "hydra.sweeper.sampler.seed=0",
            f"hydra.sweeper.n_trials={trials}", "pruning.sparsity=interval(0.5,0.95)",
            f"training.epochs={epochs}", "training.pretraining_epochs=5", "pruning.epsilon=0.1",
            "tracking=none", "training.progress=false", f"hydra.sweep.dir={tmp / name}",
            f"hydra.sweeper.storage={tmp / (name + '.journal')}",
            f"hydra.sweeper.study_name={name}"]
    if parallel:
        args += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={workers}",
                 f"hydra.sweeper.n_jobs={batch}"]
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", OMP_NUM_THREADS="1")
    t0 = time.perf_counter()
    subprocess.run(args, cwd=tmp, env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--batch", type=int, default=8,
                        help="trials asked and launched together (joblib spreads them over "
                             "the workers; larger batches leave fewer idle workers)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        serial = study(tmp, "serial", args.trials, args.workers, args.epochs, False, 1)
        parallel = study(tmp, "joblib", args.trials, args.workers, args.epochs, True,
                         args.batch)
    print(f"{args.trials} trials, {args.epochs} epochs each (1 torch thread per trial): "
          f"serial {serial:.1f} s, joblib x{args.workers} (batches of {args.batch}) "
          f"{parallel:.1f} s, speed-up {serial / parallel:.2f}x")


if __name__ == "__main__":
    main()
