"""EBOPs of every layer type against hand-computed numbers (7-bit data, 8-bit weights)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pquant import add_compression_layers, compression_report

# data (k=1, i=3, f=3): 7 bits; weights (1, 0, 7): 8 bits; BatchNorm scale/shift (1, 3, 7): 11
BITS = ["pruning=none", "quantization.default_data_fractional_bits=3"]


def _report(compose, module, shape, extra=()):
    torch.manual_seed(0)
    model = add_compression_layers(nn.Sequential(module), compose(BITS + list(extra)))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.5)
    return compression_report(model, torch.zeros(1, *shape)), model


def test_conv2d_counts_every_output_position(compose):
    # 2 -> 3 channels, 3x3 kernel, padding 1 on 8x8: 64 output positions x 54 MACs x 7 x 8
    # plus one 8-bit bias add per output (64 x 3). The reference counts one position: 4048.
    r, _ = _report(compose, nn.Conv2d(2, 3, 3, padding=1), (2, 8, 8))
    assert r["ebops/0"] == 64 * 3 * 2 * 9 * 7 * 8 + 64 * 3 * 8 == 195072


def test_conv1d_with_stride_and_groups(compose):
    # 4 -> 4 channels, groups 2 (each output sees 2 inputs), kernel 3, stride 2 on length 9:
    # 4 output positions; MACs per position 4 x 2 x 3 = 24
    r, _ = _report(compose, nn.Conv1d(4, 4, 3, stride=2, groups=2), (4, 9))
    assert r["ebops/0"] == 4 * 24 * 7 * 8 + 4 * 4 * 8


def test_avgpool(compose):
    # AvgPool2d(2) on (3, 4, 4): 2x2 outputs per channel, 4 taps each, 7-bit inputs
    r, _ = _report(compose, nn.AvgPool2d(2), (3, 4, 4))
    assert r["ebops/0"] == 4 * 4 * 3 * 7 == 336


def test_batchnorm(compose):
    # one 7 x 11 multiply and one 11-bit add per element, 4 channels x 5 positions
    r, _ = _report(compose, nn.BatchNorm1d(4), (4, 5))
    assert r["ebops/0"] == 20 * (7 * 11 + 11) == 1760


def test_relu_is_free_and_lookup_tables_cost_2_pow_bits(compose):
    r, _ = _report(compose, nn.ReLU(), (6,))
    assert r["ebops/0"] == 0
    # sigmoid: signed 7-bit input, unsigned 7-bit output (0, 0, 7)
    r, _ = _report(compose, nn.Sigmoid(), (6,))
    assert r["ebops/0"] == pytest.approx(1e-4 * 6 * 2**7 * 7)


def test_pruned_conv_weights_cost_nothing(compose):
    _, model = _report(compose, nn.Conv2d(2, 3, 3, padding=1), (2, 8, 8))
    with torch.no_grad():
        model[0].weight[1] = 0.0  # one output channel fully pruned
    r = compression_report(model, torch.zeros(1, 2, 8, 8))
    assert r["ebops/0"] == 64 * 2 * 2 * 9 * 7 * 8 + 64 * 3 * 8
    assert r["bops/0"] == 195072


def test_hgq_uses_per_element_bits(compose):
    torch.manual_seed(0)
    model = add_compression_layers(nn.Sequential(nn.Linear(3, 2)),
                                   compose(["pruning=none", "quantization=hgq"]))
    layer = model[0]
    with torch.no_grad():
        layer.weight.fill_(0.5)
        layer.bias.fill_(0.5)
        layer.weight_quantizer.f.copy_(torch.tensor([[7.0, 3.0, 1.0], [2.0, 2.0, 2.0]]))
        layer.input_quantizer.f.copy_(torch.tensor([4.0, 4.0, 0.0]))
        layer.bias_quantizer.f.copy_(torch.tensor([7.0, 1.0]))
    r = compression_report(model, torch.zeros(1, 3))
    w = torch.tensor([[8.0, 4.0, 2.0], [3.0, 3.0, 3.0]])  # k + i + f with k=1, i=0
    x = torch.tensor([8.0, 8.0, 4.0])  # k + i + f with k=1, i=3
    assert r["ebops/0"] == pytest.approx(float((w * x).sum()) + 8 + 2)
