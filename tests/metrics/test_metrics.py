"""Metrics against hand-computed values."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pquant import add_compression_layers, compression_report
from pquant.metrics.sparsity import sparsity_metrics
from pquant.nn.ebops import linear_cost


def _fixed_dense_model(compose, pruned_rows=()):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3))
    cfg = compose(["pruning=none", "quantization.default_data_fractional_bits=3"])
    model = add_compression_layers(model, cfg)
    with torch.no_grad():
        model[0].weight.fill_(0.5)
        model[0].bias.fill_(0.25)
        for r in pruned_rows:
            model[0].weight[r] = 0.0
    return model


def test_dense_ebops_hand_computed(compose):
    # data k=1 i=3 f=3 -> 7 bits in; weights k=1 i=0 f=7 -> 8 bits; bias 8 bits
    model = _fixed_dense_model(compose)
    r = compression_report(model, torch.zeros(2, 4))
    assert r["ebops/0"] == 4 * 3 * 7 * 8 + 3 * 8  # 696, as in the reference's example
    assert r["bops/0"] == 696
    assert r["bits/input/0"] == 7 and r["bits/weight/0"] == 8


def test_pruned_weights_cost_nothing_in_ebops(compose):
    model = _fixed_dense_model(compose, pruned_rows=(1,))
    r = compression_report(model, torch.zeros(1, 4))
    assert r["ebops/0"] == 2 * 4 * 7 * 8 + 3 * 8
    assert r["bops/0"] == 696  # BOPs count the dense layer
    assert r["sparsity/0"] == pytest.approx(4 / 12)
    assert r["params/0/nonzero"] == 8 + 3 and r["params/total"] == 15


def test_every_output_position_counts():
    bits_w = torch.full((3, 4), 8.0)
    kept = torch.ones(3, 4)
    bops, ebops = linear_cost(bits_w, torch.tensor(7.0), kept, torch.tensor(8.0), positions=5)
    assert ebops == 5 * (4 * 3 * 7 * 8 + 3 * 8)


def test_sequence_input_counts_positions(compose):
    model = _fixed_dense_model(compose)
    r = compression_report(model, torch.zeros(2, 6, 4))  # (batch, sequence, features)
    assert r["ebops/0"] == 6 * 696


def test_float_layers_count_32_bits(compose):
    torch.manual_seed(0)
    model = add_compression_layers(nn.Sequential(nn.Linear(4, 3)),
                                   compose(["pruning=none", "quantization=none"]))
    r = compression_report(model, torch.zeros(1, 4))
    assert r["bits/weight/mean"] == 32 and r["bits/activation/mean"] == 32
    assert r["ebops/total"] == 4 * 3 * 32 * 32 + 3 * 32


def test_sparsity_counts_weights_rounded_to_zero(compose):
    model = _fixed_dense_model(compose)
    with torch.no_grad():
        model[0].weight[0, 0] = 1e-4  # below half an LSB of f=7: quantized to 0
    assert sparsity_metrics(model)["sparsity/0"] == pytest.approx(1 / 12)


def test_report_keys_and_model_size(compose, tiny_mlp):
    model = add_compression_layers(tiny_mlp(), compose(["pruning=none"]))
    r = compression_report(model, torch.zeros(3, 8))
    for key in ("sparsity/global", "bits/weight/mean", "bits/activation/mean", "ebops/total",
                "bops/total", "params/total", "params/nonzero", "size/bits",
                "sparsity/fc1", "ebops/out", "bits/weight/fc2"):
        assert key in r
    n_params = 8 * 16 + 16 + 16 * 8 + 8 + 8 * 3 + 3
    assert r["params/total"] == n_params
    assert r["size/bits"] == 8 * r["params/nonzero"]
    assert r["ebops/total"] == pytest.approx(sum(r[f"ebops/{n}"] for n in ("fc1", "fc2", "out")))
