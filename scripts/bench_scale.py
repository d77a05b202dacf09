"""Trials per minute with 1, 2 and 3 sweep workers on one PostgreSQL study.

Starts a throw-away PostgreSQL server (as the tests do), then for each worker count runs that
many ``python -m pquant -m hydra/sweeper=pquant_optuna`` processes on a fresh study with
``max_trials`` bounding the total, and reports trials per minute (wall clock, from the first
start to the last exit: process start-up is included, as on real nodes).

    python scripts/bench_scale.py [--trials 12] [--epochs 30] [--workers 1 2 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.scale.servers import start_postgres  # noqa: E402


def run(workers: int, trials: int, epochs: int, storage: str, folder: Path) -> float:
    """Seconds for ``workers`` processes to finish a study of ``trials`` trials."""
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", PQUANT_KERNELS="off",
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "pquant", "-m", "hydra/sweeper=pquant_optuna",
           "hydra/sweeper/pquant_sampler=random", "data=synthetic",
           f"training.epochs={epochs}", "training.pretraining_epochs=0",
           "training.progress=false", "pruning.epsilon=0.5", "tracking=none",
           "pruning.sparsity=interval(0.5,0.95)", f"hydra.sweeper.study_name=bench{workers}",
           f"hydra.sweeper.storage={storage}", f"hydra.sweeper.n_trials={trials}",
           f"hydra.sweeper.max_trials={trials}"]
    start = time.monotonic()
    procs = [subprocess.Popen([*cmd, f"hydra.sweep.dir={folder / f'w{workers}-{i}'}"],
                              cwd=folder, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for i in range(workers)]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"a worker failed:\n{err[-2000:]}")
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    server, stop = start_postgres()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            print(f"{'workers':>7} {'seconds':>8} {'trials/min':>10}")
            for n in args.workers:
                storage = server.create_database(f"bench_{n}")
                seconds = run(n, args.trials, args.epochs, storage, Path(tmp))
                print(f"{n:>7} {seconds:>8.1f} {args.trials / seconds * 60:>10.1f}")
    finally:
        stop()


if __name__ == "__main__":
    main()
