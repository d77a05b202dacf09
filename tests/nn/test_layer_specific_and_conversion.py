"""layer_specific overrides, and conversion of awkward models (residuals, functional ops)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pquant import ConfigError, add_compression_layers
from pquant.nn.conv import PQConv2d
from pquant.nn.dense import PQDense
from pquant.nn.norm import PQBatchNorm2d


def _with_table(compose, table: dict, overrides=()):
    """Globs cannot be written in Hydra's override grammar; experiment YAML files or code set
    them like this."""
    from omegaconf import OmegaConf

    cfg = compose(list(overrides))
    OmegaConf.update(cfg, "quantization.layer_specific", table, merge=False)
    return cfg


def test_exact_names_and_globs(compose, tiny_mlp):
    cfg = _with_table(compose, {
        "fc*": {"weight": {"fractional_bits": 5}},
        "fc2": {"weight": {"integer_bits": 1, "fractional_bits": 3}, "input": {"quantize": False}},
        "act1": {"output": {"fractional_bits": 2}}})
    model = add_compression_layers(tiny_mlp(), cfg)
    assert model.fc1.weight_quantizer.spec.f == 5
    spec = model.fc2.weight_quantizer.spec  # the exact entry applies after the glob
    assert (spec.i, spec.f) == (1, 3)
    assert model.fc2.input_quantizer is None
    assert model.act1.output_quantizer.spec.f == 2
    assert model.out.weight_quantizer.spec.f == 7  # untouched


def test_modes_and_granularity_per_layer(compose, tiny_mlp):
    cfg = compose(["+quantization.layer_specific={fc1: {weight: {round_mode: TRN, "
                   "overflow_mode: WRAP, granularity: per_channel}}}"])
    model = add_compression_layers(tiny_mlp(), cfg)
    q = model.fc1.weight_quantizer
    assert q.round_mode.name == "TRN" and q.overflow_mode.name == "WRAP"
    assert q.granularity.name == "per_channel"


def test_unknown_layer_lists_the_layers(compose, tiny_mlp):
    with pytest.raises(ConfigError) as err:
        add_compression_layers(tiny_mlp(), compose(
            ["+quantization.layer_specific.fc9.weight.fractional_bits=3"]))
    message = str(err.value)
    assert "fc9" in message and "'fc1'" in message and "'act1'" in message


def test_section_the_layer_does_not_have(compose, tiny_mlp):
    with pytest.raises(ConfigError, match="'act1' has no 'weight' quantizer"):
        add_compression_layers(tiny_mlp(), _with_table(compose, {"act1": {"weight": {
            "integer_bits": 1}}}))


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Linear(8, 16), nn.Sequential(nn.ReLU(), nn.Linear(16, 16)))
        self.act = nn.SiLU()  # not supported: stays float
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        h = self.stem(x)
        h = F.relu(h) + h  # functional relu and a residual add
        return self.head(self.act(h))


def test_residual_model_with_functional_calls_and_an_unsupported_layer(compose):
    torch.manual_seed(0)
    original = Residual()
    model = add_compression_layers(original, compose(["quantization.quantize_output=false"]))
    report = model.pquant_report
    assert set(report.converted) == {"stem.0", "stem.1.0", "stem.1.1", "head"}
    assert report.unsupported == {"act": "SiLU"}
    flow = "\n".join(report.dataflow)
    assert "'add' (functional add) computes in floating point" in flow
    assert "'act' (SiLU) is not converted" in flow
    assert "functional relu" in flow
    assert "the model output" in flow  # quantize_output=false: the logits are float
    assert type(original.stem[0]) is nn.Linear  # the user's model is untouched
    out = model(torch.randn(4, 8))
    assert out.shape == (4, 3)


def test_strict_rejects_unsupported_layers(compose):
    with pytest.raises(ConfigError, match="SiLU"):
        add_compression_layers(Residual(), compose([]), strict=True)


def test_untraceable_model_is_reported_not_fatal(compose):
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
                return self.fc(x)
            return -self.fc(x)

    model = add_compression_layers(Branchy(), compose([]))
    assert isinstance(model.fc, PQDense)
    assert "could not trace" in model.pquant_report.dataflow[0]


def test_batchnorm_keeps_trained_state(compose):
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.fill_(3.0)
        bn.running_mean.fill_(5.0)
        bn.running_var.fill_(2.0)
        bn.num_batches_tracked.fill_(7)
    model = add_compression_layers(nn.Sequential(nn.Conv2d(1, 3, 3), bn), compose([]))
    assert isinstance(model[0], PQConv2d) and isinstance(model[1], PQBatchNorm2d)
    assert torch.equal(model[1].weight, torch.full((3,), 3.0))  # the reference resets to 1
    assert torch.equal(model[1].running_mean, torch.full((3,), 5.0))
    assert int(model[1].num_batches_tracked) == 7
    # the default scale format holds 3.0 exactly (the reference's saturates at 0.992)
    assert torch.equal(model[1].effective_weight(), torch.full((3,), 3.0))


def test_relu_multiplier(compose, tiny_mlp):
    model = add_compression_layers(tiny_mlp(), compose(["quantization.use_relu_multiplier=true"]))
    assert model.act1.multiplier is not None and float(model.act1.multiplier.detach()) == 0.0
    assert "act1.input_quantizer" not in model.pquant_report.elided  # scaled: not an identity
    x = torch.tensor([[0.5, 1.0]])
    with torch.no_grad():
        model.act1.multiplier.fill_(-1.0)
    from pquant.nn.activation import PQActivation

    act = PQActivation("relu", relu_multiplier=True)
    with torch.no_grad():
        act.multiplier.fill_(-1.0)
    assert act(x).tolist() == [[0.25, 0.5]]
