"""Export benchmark: QONNX export + check, hls4ml export + compile + check, for the default MLP.

    python scripts/bench_export.py                      # default MLP (fixed point), finalised
    python scripts/bench_export.py outputs/runs/<run>   # a finished run (load_run, final=True)
    python scripts/bench_export.py -- quantization=hgq  # config overrides for the built model

Prints the wall-clock seconds of each stage and the mismatches on the digits test set (360
samples). Times depend on the machine's load (g++ dominates).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra.utils import instantiate


def _model(argv: list[str]):
    import pquant

    if argv and Path(argv[0]).is_dir():
        model = pquant.load_run(argv[0], final=True)
        return model, instantiate(model.pquant_config.data), argv[0]
    overrides = [a for a in argv if a != "--"]
    cfg = pquant.load_config(overrides)
    data = instantiate(cfg.data)
    torch.manual_seed(0)
    model = instantiate(cfg.model, input_size=data.num_features, output_size=data.num_classes)
    model = pquant.add_compression_layers(model, cfg).eval()
    model(data.example_input(8))
    return pquant.finalize(model), data, " ".join(overrides) or "default MLP"


def main(argv: list[str]) -> None:
    from pquant.export import check_exports

    model, data, what = _model(argv)
    inputs = torch.cat([x for x, _ in data.test_loader(1024)])
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        metrics, _ = check_exports(model, inputs, tmp, ["qonnx", "hls4ml"])
        total = time.perf_counter() - t0
    print(f"export benchmark: {what}, {int(metrics['export/checked_samples'])} test samples")
    for key in sorted(metrics):
        if key.endswith("seconds"):
            print(f"  {key:36s} {metrics[key]:8.2f} s")
    print(f"  {'total':36s} {total:8.2f} s")
    print(f"  mismatches: qonnx {int(metrics['export/qonnx/mismatches'])}, "
          f"hls4ml {int(metrics['export/hls4ml/mismatches'])}")


if __name__ == "__main__":
    main(sys.argv[1:])
