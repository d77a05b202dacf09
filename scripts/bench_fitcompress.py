"""Time of the FITCompress search against the pretraining it follows, on the default run.

Builds the default run (digits, 64-64-32-32-10 MLP, PDP, 8-bit fixed point) with
``fitcompress=on`` and the seed's FITCompress defaults, trains the 50 pretraining epochs, runs the
search, and stops before the training stage (``training.epochs=0``). Both are timed in this
process; the ratio search / pretraining is what matters (the machine's speed drifts).

Usage: python scripts/bench_fitcompress.py [--repeat 1] [overrides ...]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pquant import add_compression_layers, load_config, train_model
from pquant.config.sections import sections
from pquant.runner import resolve_device, seed_everything


def once(overrides: list[str]) -> dict[str, float]:
    cfg = load_config(["fitcompress=on", "tracking=none", "training.progress=false",
                       "training.epochs=0", *overrides])
    s = sections(cfg)
    seed_everything(int(cfg.seed))
    device = resolve_device(str(cfg.device))
    from hydra.utils import instantiate

    data = instantiate(cfg.data)
    model = instantiate(cfg.model, input_size=data.num_features, output_size=data.num_classes)
    model = add_compression_layers(model, cfg, inplace=True).to(device)
    stamps: list[float] = []
    start = time.perf_counter()
    result = train_model(model, cfg, data.train_loader(s.training.batch_size, int(cfg.seed)),
                         data.val_loader(s.training.eval_batch_size), device=device,
                         on_epoch_end=lambda m, e: stamps.append(time.perf_counter()))
    pretraining = stamps[s.training.pretraining_epochs - 1] - start
    r = result.fitcompress.result
    return {"pretraining_s": pretraining, "search_s": r.search_time_s,
            "ratio": r.search_time_s / pretraining, "expanded": r.nodes_expanded,
            "fisher": r.fisher_evaluations, "fisher_batches": r.fisher_batches,
            "compression": r.compression, "reached": float(r.reached)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    runs = [once(args.overrides) for _ in range(args.repeat)]
    for n, r in enumerate(runs):
        print(f"run {n}: pretraining {r['pretraining_s']:.2f} s, search {r['search_s']:.2f} s "
              f"(ratio {r['ratio']:.3f}); {r['expanded']} nodes expanded, {r['fisher']} Fisher "
              f"estimates ({r['fisher_batches']} batches), size {r['compression']:.4f} "
              f"{'reached' if r['reached'] else 'NOT reached'}")
    print(f"median ratio search / pretraining: {statistics.median(r['ratio'] for r in runs):.3f}")


if __name__ == "__main__":
    main()
