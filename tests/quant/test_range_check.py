"""Formats that cannot represent a layer's observed values are reported (not refused)."""

from __future__ import annotations

import torch

from pquant import add_compression_layers, train_model
from pquant.data.synthetic import SyntheticData
from pquant.nn.range_check import format_problem, range_warnings
from pquant.quant.quantizer import FixedPointQuantizer

SHORT = ["training.pretraining_epochs=1", "training.epochs=1", "training.progress=false",
         "pruning=none"]


def test_format_problem_cases():
    x = torch.tensor([0.3, -0.4, 0.05, 0.0])
    assert format_problem(FixedPointQuantizer(1, 0, 7), x) is None
    zero = format_problem(FixedPointQuantizer(1, 3, -2), x)
    assert "rounds every value to 0" in zero and "step 4" in zero
    sat = format_problem(FixedPointQuantizer(1, -5, 12), x)
    assert "100% of the values lie outside" in sat and "largest |x| 0.4" in sat
    # unsigned formats clamp negatives by design (ReLU): only positives count
    assert format_problem(FixedPointQuantizer(0, 0, 7), torch.tensor([-5.0, -3.0, 0.2])) is None


def test_training_reports_a_saturating_weight_format(compose, tiny_mlp):
    cfg = compose([*SHORT, "quantization.default_weight_integer_bits=-5",
                   "quantization.default_weight_fractional_bits=12"])
    data = SyntheticData(n_samples=120, n_features=8, n_classes=3)
    model = add_compression_layers(tiny_mlp(), cfg)
    result = train_model(model, cfg, data.train_loader(32), data.val_loader(64))
    found = [w for w in result.warnings if "(weight): format k=1, i=-5, f=12" in w]
    assert {w.split(" ")[0] for w in found} == {"fc1", "fc2", "out"}
    assert all("quantization.default_weight_integer_bits" in w for w in found)


def test_data_format_rounding_everything_to_zero(compose, tiny_mlp):
    cfg = compose([*SHORT, "quantization.default_data_integer_bits=4",
                   "quantization.default_data_fractional_bits=-3"])
    model = add_compression_layers(tiny_mlp(), cfg)
    (message,) = range_warnings(model, torch.randn(16, 8))
    assert message.startswith("fc1 (input): format k=1, i=4, f=-3 rounds every value to 0")


def test_default_formats_are_quiet(compose, tiny_mlp):
    for preset in ("fixed", "hgq"):
        model = add_compression_layers(tiny_mlp(), compose([f"quantization={preset}"]))
        assert range_warnings(model, torch.randn(16, 8)) == []
