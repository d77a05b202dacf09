"""Per-feature HGQ formats and quantizer elision in models whose forward is written by hand
(through the torch.fx trace), equal to the nn.Sequential chain they spell out."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pquant import add_compression_layers, train_model
from pquant.models.mlp import mlp


class HandMLP(nn.Module):
    """The 64-64-32-32-10 MLP with its own forward: ReLU modules or F.relu calls."""

    def __init__(self, functional: bool = False, sizes=(64, 64, 32, 32, 10)) -> None:
        super().__init__()
        self.functional = functional
        n_in, h1, h2, h3, n_out = sizes
        # (declared out of call order on purpose: conversion follows the forward, not __init__)
        self.out = nn.Linear(h3, n_out)
        self.fc1, self.fc2, self.fc3 = nn.Linear(n_in, h1), nn.Linear(h1, h2), nn.Linear(h2, h3)
        if not functional:
            self.act1, self.act2, self.act3 = nn.ReLU(), nn.ReLU(), nn.ReLU()

    def forward(self, x):
        relu = [F.relu] * 3 if self.functional else [self.act1, self.act2, self.act3]
        x = relu[0](self.fc1(x))
        x = relu[1](self.fc2(x))
        x = relu[2](self.fc3(x))
        return self.out(x)


class Untraceable(HandMLP):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            x = x * 1.0
        return super().forward(x)


def _pair(functional=False, cls=HandMLP):
    torch.manual_seed(0)
    hand = cls(functional)
    seq = mlp(64, 10, (64, 32, 32))
    with torch.no_grad():
        for name in ("fc1", "fc2", "fc3", "out"):
            getattr(seq, name).load_state_dict(getattr(hand, name).state_dict())
    return hand, seq


def _formats(model):
    return {f"{name}.{role}": (tuple(q.bits().shape), q.bypass)
            for name, m in model.named_modules() if hasattr(m, "quantizers")
            for role, q in m.quantizers()}


@pytest.mark.parametrize("preset", [["quantization=hgq"], []])
def test_hand_written_forward_gets_the_formats_of_the_sequential_chain(compose, preset):
    cfg = compose(preset)
    hand, seq = _pair()
    hand, seq = add_compression_layers(hand, cfg), add_compression_layers(seq, cfg)
    assert hand.pquant_report.per_tensor_fallback == []
    assert _formats(hand) == _formats(seq)
    assert sorted(hand.pquant_report.elided) == sorted(seq.pquant_report.elided)
    if preset:  # HGQ: the ReLU input quantizers are per feature (64, 32, 32 features)
        assert [tuple(getattr(hand, f"act{n}").input_quantizer.bits().shape)
                for n in (1, 2, 3)] == [(64,), (32,), (32,)]
    else:  # fixed point: the ReLU and the next layer's input quantizers are skipped, exactly
        assert "fc2.input_quantizer" in hand.pquant_report.elided
    x = torch.randn(16, 64) * 3
    for model in (hand, seq):
        model.eval()
    assert torch.equal(hand(x), seq(x))


def test_functional_relu_is_followed_by_the_elision(compose):
    hand, seq = _pair(functional=True)
    hand = add_compression_layers(hand, compose([]))
    # F.relu keeps the dense output on its (non-negative) grid: the next input quantizer is an
    # identity and is skipped, as after a ReLU module
    assert sorted(hand.pquant_report.elided) == ["fc2.input_quantizer", "fc3.input_quantizer",
                                                 "out.input_quantizer"]
    for q in (hand.fc2.input_quantizer, hand.fc3.input_quantizer):
        q.bypass = False
    hand.eval()
    x = torch.randn(32, 64) * 4
    with torch.no_grad():
        reference = hand(x)
    from pquant.nn.chain import elide_redundant_quantizers

    elide_redundant_quantizers(hand)
    with torch.no_grad():
        assert torch.equal(hand(x), reference)


def test_untraceable_forward_falls_back_with_a_warning_naming_the_layers(compose, caplog):
    hand, _ = _pair(cls=Untraceable)
    with caplog.at_level(logging.WARNING):
        model = add_compression_layers(hand, compose(["quantization=hgq"]))
    assert sorted(model.pquant_report.per_tensor_fallback) == ["act1", "act2", "act3"]
    text = caplog.text
    for name in ("'act1'", "'act2'", "'act3'"):
        assert name in text
    assert "per-tensor" in text and "cannot be traced by torch.fx" in text
    assert model.act1.input_quantizer.bits().numel() == 1


def test_hgq_learns_per_feature_input_formats_in_a_hand_written_mlp(compose):
    from pquant.data.synthetic import SyntheticData

    torch.manual_seed(0)
    data = SyntheticData(n_samples=400, n_features=64, n_classes=10)
    cfg = compose(["quantization=hgq", "pruning=none", "training.pretraining_epochs=1",
                   "training.epochs=6", "training.progress=false", "quantization.hgq_beta=1e-3",
                   "training.optimizer.lr=0.01"])
    model = add_compression_layers(HandMLP(), cfg)
    start = model.act1.input_quantizer.bits().detach().clone()
    assert start.shape == (64,) and len(start.unique()) == 1
    train_model(model, cfg, data.train_loader(32), data.val_loader(64))
    differ = []
    for n, width in ((1, 64), (2, 32), (3, 32)):
        q = getattr(model, f"act{n}").input_quantizer
        bits = q.bits().detach()
        assert bits.shape == (width,)
        assert len(q.f.detach().unique()) > width // 2  # one learned format per feature
        differ.append(len(bits.unique()) > 1)
    assert any(differ)  # and the widths themselves came apart
