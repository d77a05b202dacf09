"""Training step time: ``torchrun --nproc_per_node=2`` against one process, same global batch.

For each global batch size, trains the default model (digits MLP, PDP pruning, 8-bit fixed
point, ``PQUANT_KERNELS=off``) for a few epochs twice -- in one process, and as 2 torchrun
processes (gloo, 127.0.0.1), each process with ``--threads`` threads (default 1, torchrun's own
default) -- and reports the median epoch time divided by the batches per epoch (the first epoch
is dropped as warm-up); the two runs alternate ``--repeats`` times and the medians are compared.
Speed-up = one-process time / two-process time.

    python scripts/bench_ddp.py [--batch-sizes 64 512] [--epochs 8] [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time


def worker(batch_size: int, epochs: int) -> None:
    """One run (alone, or one rank under torchrun); rank 0 prints ``{"step_ms": ...}``."""
    import torch
    from hydra.utils import instantiate

    from pquant import add_compression_layers, distributed, load_config, train_model
    from pquant.runner import seed_everything

    cfg = load_config([f"training.batch_size={batch_size}", "training.pretraining_epochs=0",
                       f"training.epochs={epochs}", "training.fine_tuning_epochs=0",
                       "training.progress=false", "tracking=none"])
    seed_everything(int(cfg.seed))
    distributed.start(torch.device("cpu"))
    w = distributed.world()
    data = instantiate(cfg.data)
    model = instantiate(cfg.model, input_size=data.num_features, output_size=data.num_classes)
    model = add_compression_layers(model, cfg, inplace=True)
    distributed.broadcast_state(model)
    loader = data.train_loader(batch_size, int(cfg.seed))
    if w.distributed:
        loader = distributed.ShardedLoader(loader, w)
    times: list[float] = []
    last = [time.perf_counter()]

    def tick(_metrics, _epoch) -> None:
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    train_model(model, cfg, loader, None, on_epoch_end=tick, progress=False)
    if w.rank0:
        print(json.dumps({"step_ms": 1e3 * statistics.median(times[1:]) / len(loader)}))
    distributed.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(batch_size: int, epochs: int, nproc: int, threads: int) -> float:
    env = dict(os.environ, PQUANT_KERNELS="off", MLFLOW_DISABLE_TELEMETRY="true",
               OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable]
    if nproc > 1:
        cmd += ["-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                "--master_addr=127.0.0.1", f"--master_port={_free_port()}"]
    cmd += [__file__, "--worker", "--batch-sizes", str(batch_size), "--epochs", str(epochs)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"run failed:\n{proc.stderr[-3000:]}")
    line = [x for x in proc.stdout.splitlines() if x.startswith("{")][-1]
    return float(json.loads(line)["step_ms"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.batch_sizes[0], args.epochs)
        return
    print(f"{'global batch':>12} {'1 process ms/step':>18} {'2 processes ms/step':>20} "
          f"{'speed-up':>9}")
    for b in args.batch_sizes:
        ones, twos = [], []
        for _ in range(args.repeats):  # alternated, so that a load change hits both alike
            ones.append(measure(b, args.epochs, 1, args.threads))
            twos.append(measure(b, args.epochs, 2, args.threads))
        one, two = statistics.median(ones), statistics.median(twos)
        print(f"{b:>12} {one:>18.2f} {two:>20.2f} {one / two:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
