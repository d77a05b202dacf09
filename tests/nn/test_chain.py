"""Elided quantizers are exact identities: same outputs and gradients as without elision."""

from __future__ import annotations

import torch
from torch import nn

from pquant import add_compression_layers
from pquant.nn.chain import elide_redundant_quantizers
from pquant.quant.quantizer import FixedPointQuantizer


def _grads(model, x, y):
    model.zero_grad()
    out = model(x)
    nn.functional.cross_entropy(out, y).backward()
    return out.detach(), [p.grad.clone() for p in model.parameters()]


def _clear_bypass(model):
    for m in model.modules():
        if isinstance(m, FixedPointQuantizer):
            m.bypass = False


def test_default_chain_elides_the_redundant_quantizers(compose, tiny_mlp):
    model = add_compression_layers(tiny_mlp(), compose(["pruning=none"]))
    elided = model.pquant_report.elided
    assert "act1.input_quantizer" in elided and "act1.output_quantizer" in elided
    assert "fc2.input_quantizer" in elided and "out.input_quantizer" in elided
    assert "fc1.input_quantizer" not in elided  # the model input is raw data
    assert not any(n.endswith("output_quantizer") and n.startswith("fc") for n in elided)


def test_elision_is_exact(compose, tiny_mlp):
    torch.manual_seed(3)
    x = torch.randn(256, 8) * 3
    y = torch.randint(0, 3, (256,))
    model = add_compression_layers(tiny_mlp(), compose(["pruning=none"]))
    for training in (True, False):
        model.train(training)
        out_fast, g_fast = _grads(model, x, y)
        _clear_bypass(model)
        out_ref, g_ref = _grads(model, x, y)
        elide_redundant_quantizers(model)
        assert torch.equal(out_fast, out_ref)
        for a, b in zip(g_fast, g_ref):
            assert torch.equal(a, b)


def test_no_elision_when_producer_is_unquantized_or_wrapping(compose, tiny_mlp):
    cfg = compose(["pruning=none", "quantization.quantize_output=false"])
    model = add_compression_layers(tiny_mlp(), cfg)
    assert not any(n.endswith("input_quantizer") and n.startswith("fc")
                   for n in model.pquant_report.elided)
    cfg = compose(["pruning=none", "quantization.overflow_mode_data=WRAP"])
    model = add_compression_layers(tiny_mlp(), cfg)
    assert model.pquant_report.elided == []


def test_no_elision_when_consumer_grid_is_coarser(compose, tiny_mlp):
    model = add_compression_layers(tiny_mlp(), compose(["pruning=none"]))
    model.fc2.input_quantizer.set_format(f=2)  # coarser than fc1's output grid (f=4)
    elided = elide_redundant_quantizers(model)
    assert "fc2.input_quantizer" not in elided
    assert "out.input_quantizer" in elided


def test_tanh_chain_is_not_treated_like_relu(compose, tiny_mlp):
    model = add_compression_layers(tiny_mlp(activation="tanh"),
                                   compose(["pruning=none", "quantization.use_real_tanh=true"]))
    elided = model.pquant_report.elided
    # tanh's input quantizer covers the signed Dense output (same format): identity
    assert "act1.input_quantizer" in elided
    # its output quantizer rounds tanh's off-grid values: never skipped
    assert "act1.output_quantizer" not in elided


def test_nested_sequentials_are_followed(compose):
    torch.manual_seed(0)
    inner = nn.Sequential(nn.Linear(8, 8), nn.ReLU())
    model = nn.Sequential(inner, nn.Sequential(nn.Linear(8, 4)))
    model = add_compression_layers(model, compose(["pruning=none"]))
    assert "1.0.input_quantizer" in model.pquant_report.elided
