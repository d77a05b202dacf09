"""Training-step time of the compressed default MLP relative to the same plain-torch MLP.

Both models are trained in one process on the same batches (batch 1024, 64 features, 10 classes)
with the configured optimizer; the compressed step includes the losses the training loop adds
(pruning regularisers, HGQ's EBOPs and width terms);
repetitions are interleaved (plain, compressed, plain, ...) so machine noise hits both alike, and
the median ratio is reported per stage of the compressed model:

* pretraining -- masks are ones, quantizers active;
* training    -- PDP learns its masks (soft mask + threshold selection every step);
* fine-tuning -- masks frozen and binary.

With ``--threads 1,2`` every repetition runs both models at each thread count in turn, so the
thread counts are compared in one process under the same machine load; the speed-up of each
model from 1 to 2 threads is printed too (the fused kernels' loops run on torch's threads).

Usage: python scripts/bench_step.py [--reps 300] [--batch 1024] [--threads 1[,2]] [overrides ...]
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


def timed(fn, device: torch.device) -> float:
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--threads", default="0",
                        help="torch threads, or a comma-separated list measured together "
                             "(0: default)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("overrides", nargs="*", help="pquant config overrides")
    args = parser.parse_args()
    counts = [int(t) for t in args.threads.split(",")]
    if counts == [0]:
        counts = [torch.get_num_threads()]
    torch.set_num_threads(counts[0])
    torch.manual_seed(0)
    cfg = load_config(args.overrides)
    device = torch.device(args.device)
    base = mlp(64, 10, list(cfg.model.hidden_sizes)).to(device)
    x = torch.randn(args.batch, 64, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    from pquant import kernels

    path = kernels.prepare(device, torch.float32)
    print(f"batch {args.batch}, torch {torch.__version__}, {device}, threads {counts}, "
          f"overrides {args.overrides or '(defaults)'}; kernels: {path}")
    for stage in (Stage.PRETRAINING, Stage.TRAINING, Stage.FINETUNING):
        plain = copy.deepcopy(base)
        compressed = add_compression_layers(base, cfg).to(device)
        set_stage(compressed, stage)
        losses = CompressionLoss(compressed, sections(cfg))
        steps = {"plain": make_step(plain, x, y, cfg),
                 "pquant": make_step(compressed, x, y, cfg, losses, stage)}
        for threads in counts:  # warm-up
            torch.set_num_threads(threads)
            for _ in range(20):
                for fn in steps.values():
                    fn()
        times = {(t, k): [] for t in counts for k in steps}
        ratios: dict[int, list[float]] = {t: [] for t in counts}
        for _ in range(args.reps):
            for threads in counts:
                torch.set_num_threads(threads)
                t_plain = timed(steps["plain"], device)
                t_pq = timed(steps["pquant"], device)
                times[threads, "plain"].append(t_plain)
                times[threads, "pquant"].append(t_pq)
                ratios[threads].append(t_pq / t_plain)
        med = {key: statistics.median(v) * 1e3 for key, v in times.items()}
        for threads in counts:
            plain, pq = med[threads, "plain"], med[threads, "pquant"]
            print(f"{stage.name.lower():<12} threads {threads}  plain {plain:.3f} ms   "
                  f"pquant {pq:.3f} ms   ratio of medians {pq / plain:.2f}"
                  f"   median ratio {statistics.median(ratios[threads]):.2f}")
        if len(counts) > 1:
            a, b = counts[0], counts[-1]
            print(f"{'':<12} {a} -> {b} threads: plain {med[a, 'plain'] / med[b, 'plain']:.2f}x"
                  f" faster, pquant {med[a, 'pquant'] / med[b, 'pquant']:.2f}x faster")


if __name__ == "__main__":
    main()
