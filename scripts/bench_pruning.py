"""Training-step time of every pruning method, relative to plain torch, while masks are learned.

For each method the compressed default MLP (64-64-32-32-10, batch 1024) is put in the TRAINING
stage and timed against the same plain-torch MLP in one process (interleaved, median of the
repetitions), with the losses the loop adds. ``--quantization none`` isolates the pruning cost;
the default also runs the 8-bit fixed-point quantizers.

Usage: python scripts/bench_pruning.py [--reps 200] [--quantization fixed|none]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_step import make_step, set_stage  # noqa: E402

from pquant import add_compression_layers, load_config  # noqa: E402
from pquant.config.sections import sections  # noqa: E402
from pquant.models.mlp import mlp  # noqa: E402
from pquant.pruning.base import Stage  # noqa: E402
from pquant.training.losses import CompressionLoss  # noqa: E402

METHODS = ["pdp", "wanda", "cs", "dst", "autosparse", "activation_pruning", "mdmm"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--quantization", default="none", choices=["none", "fixed"])
    args = parser.parse_args()
    torch.manual_seed(0)
    base = mlp(64, 10)
    x, y = torch.randn(1024, 64), torch.randint(0, 10, (1024,))
    print(f"batch 1024, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"quantization={args.quantization}, TRAINING stage")
    for method in METHODS:
        cfg = load_config([f"pruning={method}", f"quantization={args.quantization}"])
        model = add_compression_layers(base, cfg)
        set_stage(model, Stage.TRAINING)
        losses = CompressionLoss(model, sections(cfg))
        steps = {"plain": make_step(copy.deepcopy(base), x, y, cfg),
                 "pquant": make_step(model, x, y, cfg, losses, Stage.TRAINING)}
        for _ in range(20):
            for fn in steps.values():
                fn()
        times = {k: [] for k in steps}
        for _ in range(args.reps):
            for k, fn in steps.items():
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        print(f"{method:<20} plain {med['plain']:.3f} ms   pquant {med['pquant']:.3f} ms   "
              f"ratio {med['pquant'] / med['plain']:.2f}")


if __name__ == "__main__":
    main()
