"""Training-step time of the compressed default MLP relative to the same plain-torch MLP.

Both models are trained in one process on the same batches (batch 1024, 64 features, 10 classes)
with the configured optimizer; the compressed step includes the losses the training loop adds
(pruning regularisers, HGQ's EBOPs and width terms);
repetitions are interleaved (plain, compressed, plain, ...) so machine noise hits both alike, and
the median ratio is reported per stage of the compressed model:

* pretraining -- masks are ones, quantizers active;
* training    -- PDP learns its masks (soft mask + threshold selection every step);
* fine-tuning -- masks frozen and binary.

Usage: python scripts/bench_step.py [--reps 300] [--batch 1024] [--threads 1] [overrides ...]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from hydra.utils import instantiate

from pquant import add_compression_layers, load_config
from pquant.config.sections import sections
from pquant.models.mlp import mlp
from pquant.nn.weight_layer import CompressedWeightMixin
from pquant.pruning.base import EpochInfo, Stage
from pquant.training.losses import CompressionLoss


def make_step(model, x, y, cfg=None, compression=None, stage=Stage.TRAINING):
    """One training step; the optimizer is the configured one (same for both models)."""
    if cfg is not None:
        opt = instantiate(cfg.training.optimizer)(model.parameters())
    else:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        out = model(x)
        loss = loss_fn(out, y)
        if compression is not None and compression.active(stage):
            loss = compression(stage, loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def set_stage(model, stage: Stage) -> None:
    for m in model.modules():
        if isinstance(m, CompressedWeightMixin) and m.pruning is not None:
            if stage is Stage.TRAINING and m.pruning.stage is Stage.PRETRAINING:
                m.pruning.on_pretraining_end()
                m.pruning.on_epoch_start(EpochInfo(Stage.TRAINING, 40, 200))
            if stage is Stage.FINETUNING:
                m.pruning.on_finetuning_start(m.weight)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("overrides", nargs="*", help="pquant config overrides")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = load_config(args.overrides)
    base = mlp(64, 10, list(cfg.model.hidden_sizes))
    x = torch.randn(args.batch, 64)
    y = torch.randint(0, 10, (args.batch,))
    print(f"batch {args.batch}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"overrides {args.overrides or '(defaults)'}")
    for stage in (Stage.PRETRAINING, Stage.TRAINING, Stage.FINETUNING):
        plain = copy.deepcopy(base)
        compressed = add_compression_layers(base, cfg)
        set_stage(compressed, stage)
        losses = CompressionLoss(compressed, sections(cfg))
        steps = {"plain": make_step(plain, x, y, cfg),
                 "pquant": make_step(compressed, x, y, cfg, losses, stage)}
        for _ in range(20):  # warm-up
            for fn in steps.values():
                fn()
        times: dict[str, list[float]] = {k: [] for k in steps}
        ratios = []
        for _ in range(args.reps):
            t_plain = timed(steps["plain"])
            t_pq = timed(steps["pquant"])
            times["plain"].append(t_plain)
            times["pquant"].append(t_pq)
            ratios.append(t_pq / t_plain)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        print(f"{stage.name.lower():<12} plain {med['plain']:.3f} ms   pquant {med['pquant']:.3f} ms"
              f"   ratio of medians {med['pquant'] / med['plain']:.2f}"
              f"   median ratio {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
