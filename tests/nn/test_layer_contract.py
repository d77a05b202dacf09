"""A contract every PQ layer passes (after HGQ2's tests/base.py idea: one class, many layers).

For each torch layer: convert it, then check
* the converted layer holds exactly the original weights and buffers (one set of parameters),
* with all its quantizers disabled it computes exactly what the torch layer computes,
* ``state_dict`` round-trips into a freshly converted layer (strict) with identical outputs,
* gradients reach the weights and, under HGQ, the learnable bit-widths,
* finalisation leaves eval outputs bit-for-bit unchanged.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from pquant import add_compression_layers, finalize
from pquant.nn.base import PQModule
from pquant.quant.base import Quantizer

CASES = {
    "linear": (lambda: nn.Linear(6, 4), (5, 6)),
    "linear_3d": (lambda: nn.Linear(6, 4), (5, 3, 6)),
    "conv1d": (lambda: nn.Conv1d(3, 4, 3, padding=1), (2, 3, 8)),
    "conv1d_groups": (lambda: nn.Conv1d(4, 4, 3, groups=2, bias=False), (2, 4, 8)),
    "conv2d": (lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1), (2, 2, 6, 6)),
    "avgpool1d": (lambda: nn.AvgPool1d(2), (2, 3, 8)),
    "avgpool2d": (lambda: nn.AvgPool2d(2, stride=1), (2, 3, 4, 4)),
    "batchnorm1d": (lambda: nn.BatchNorm1d(4), (8, 4)),
    "batchnorm1d_seq": (lambda: nn.BatchNorm1d(3), (4, 3, 5)),
    "batchnorm2d": (lambda: nn.BatchNorm2d(3), (4, 3, 5, 5)),
    "layernorm": (lambda: nn.LayerNorm(6), (3, 6)),
    "relu": (lambda: nn.ReLU(), (4, 6)),
    "tanh": (lambda: nn.Tanh(), (4, 6)),
    "hardtanh": (lambda: nn.Hardtanh(), (4, 6)),
    "leaky_relu": (lambda: nn.LeakyReLU(0.2), (4, 6)),
    "sigmoid": (lambda: nn.Sigmoid(), (4, 6)),
    "gelu": (lambda: nn.GELU(), (4, 6)),
    "softmax": (lambda: nn.Softmax(dim=-1), (4, 6)),
}
QUANTIZED = ["quantization.use_real_tanh=true"]
HGQ = ["quantization=hgq", "quantization.use_real_tanh=true", "quantization.quantize_output=true"]


def _randomise(model: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if t.is_floating_point() and name.split(".")[-1] not in ("k",):
                if name.endswith("running_var"):
                    t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
                elif name.split(".")[-1] in ("i", "f"):
                    continue
                else:
                    t.copy_(torch.randn(t.shape, generator=gen) * 0.5)


def _build(case, overrides, compose, seed=0):
    factory, shape = CASES[case]
    torch.manual_seed(seed)
    torch_layer = factory()
    _randomise(torch_layer, seed + 1)
    model = add_compression_layers(nn.Sequential(torch_layer), compose(overrides))
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed + 2)) * 2
    return torch_layer, model, x


@pytest.mark.parametrize("case", list(CASES))
class TestLayerContract:
    def test_converted_to_a_pq_layer(self, case, compose):
        _, model, _ = _build(case, QUANTIZED, compose)
        assert isinstance(model[0], PQModule)

    def test_exact_copy_of_weights_and_buffers(self, case, compose):
        torch_layer, model, _ = _build(case, QUANTIZED, compose)
        original = dict(torch_layer.state_dict())
        converted = model[0].state_dict()
        for key, value in original.items():
            assert torch.equal(converted[key], value), key
        own = [n for n, _ in model[0].named_parameters(recurse=False)]
        assert sorted(own) == sorted(n for n, _ in torch_layer.named_parameters())

    def test_disabled_quantizers_reproduce_the_torch_layer(self, case, compose):
        torch_layer, model, x = _build(case, QUANTIZED, compose)
        for q in model.modules():
            if isinstance(q, Quantizer):
                q.enabled = False
        reference = copy.deepcopy(torch_layer)
        for training in (True, False):
            model.train(training)
            reference.train(training)
            assert torch.equal(model(x), reference(x))

    def test_state_dict_round_trip(self, case, compose):
        _, a, x = _build(case, HGQ, compose, seed=0)
        _, b, _ = _build(case, HGQ, compose, seed=10)
        a.train()
        a(x)  # move BatchNorm statistics, track WRAP ranges, ...
        result = b.load_state_dict(a.state_dict(), strict=True)
        assert not result.missing_keys and not result.unexpected_keys
        for (name, ta), (_, tb) in zip(a.state_dict().items(), b.state_dict().items()):
            assert torch.equal(ta, tb), name
        a.eval()
        b.eval()
        assert torch.equal(a(x), b(x))

    def test_gradients_reach_weights_and_learnable_bits(self, case, compose):
        _, model, x = _build(case, HGQ, compose)
        model.train()
        x = x.clone().requires_grad_()
        out = model(x)
        (out * torch.randn_like(out)).sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
        layer = model[0]
        if getattr(layer, "weight", None) is not None:
            assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
        bit_grads = [p.grad for q in layer.modules() if isinstance(q, Quantizer) and q.learnable
                     for p in q.parameters()]
        assert bit_grads and all(g is not None for g in bit_grads)
        assert any(g.abs().sum() > 0 for g in bit_grads)

    @pytest.mark.parametrize("overrides", [QUANTIZED, HGQ], ids=["fixed", "hgq"])
    def test_finalized_outputs_are_identical(self, case, compose, overrides):
        _, model, x = _build(case, overrides, compose)
        model.train()
        model(x)
        model.eval()
        before = model(x)
        finalize(model)
        assert model[0].finalized
        assert not any(q.learnable for q in model.modules() if isinstance(q, Quantizer))
        assert torch.equal(model(x), before)
