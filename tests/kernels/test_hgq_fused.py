"""The fused HGQ kernels (pquant.kernels) against the torch path.

Values and the gradients of inputs and weights agree bit for bit; gradients of the bit
parameters are sums over many elements, which the kernels add in their own (thread-count
independent) order, and agree to float rounding.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pquant import add_compression_layers, kernels, load_config
from pquant.config.sections import sections
from pquant.nn.activation import PQActivation
from pquant.nn.dense import PQDense
from pquant.nn.ebops import linear_cost
from pquant.pruning.base import EpochInfo, Stage
from pquant.pruning.pdp import PDP, PDPConfig
from pquant.quant.hgq import HGQQuantizer
from pquant.training.losses import CompressionLoss
from tests.kernels.test_fused import assert_same, assert_sums_close, both, use_kernels


def _hgq(shape, f=4, i=2, overflow="SAT", round_mode="RND", seed=0):
    q = HGQQuantizer(1, i, f, round_mode, overflow, shape=shape)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # heterogeneous widths, some of them non-positive
        q.f.add_(torch.randint(-3, 3, q.f.shape, generator=g).float()
                 + 0.3 * torch.rand(q.f.shape, generator=g))
        q.i.add_(torch.randint(-2, 2, q.i.shape, generator=g).float() - 0.2)
    return q


def _hgq_dense(stage: Stage, *, bias=True, quant_in=True, weight_shape=(24, 16),
               overflow="SAT", round_mode="RND", pruning=True):
    torch.manual_seed(5)
    layer = PQDense(16, 24, bias=bias,
                    input_quantizer=_hgq((16,), 3, 2, overflow, round_mode, 1) if quant_in else None,
                    weight_quantizer=_hgq(weight_shape, 6, 0, overflow, round_mode, 2),
                    bias_quantizer=_hgq((24,), 6, 0, overflow, round_mode, 3) if bias else None,
                    pruning=PDP(PDPConfig(sparsity=0.5), (24, 16), "linear") if pruning else None)
    nn.init.uniform_(layer.weight, -1.2, 1.2)
    if bias:
        nn.init.uniform_(layer.bias, -1.5, 1.5)
    if pruning and stage is not Stage.PRETRAINING:
        layer.pruning.on_pretraining_end()
        layer.pruning.on_epoch_start(EpochInfo(Stage.TRAINING, 0, 2))
    if pruning and stage is Stage.FINETUNING:
        layer.pruning.on_finetuning_start(layer.weight)
    return layer


def _bit_grads(layer):
    return [p.grad for n, p in sorted(layer.named_parameters()) if n.endswith(".i_f")]


@pytest.mark.parametrize("stage", list(Stage))
@pytest.mark.parametrize("variant", [
    {}, {"bias": False}, {"quant_in": False}, {"weight_shape": (24, 1)}, {"weight_shape": ()},
    {"overflow": "SAT_SYM", "round_mode": "RND_CONV"}, {"round_mode": "TRN"}, {"pruning": False},
])
def test_hgq_dense_matches(monkeypatch, stage, variant):
    g = torch.Generator().manual_seed(6)
    x0 = torch.randn(40, 16, generator=g) * 3
    coeff = torch.randn(40, 24, generator=g)

    def run():
        layer = _hgq_dense(stage, **variant)
        loss_of = CompressionLoss(layer, sections(load_config(["quantization=hgq"])))
        x = x0.clone().requires_grad_(True)
        y = layer(x)
        ebops, widths = loss_of.hgq_terms()
        ((y * coeff).sum() + 1e-3 * ebops + 0.1 * widths).backward()
        grads = [layer.weight.grad, layer.bias.grad if variant.get("bias", True) else None]
        return ([y.detach(), x.grad, *grads], _bit_grads(layer),
                [ebops.detach().reshape(1), widths.detach().reshape(1)], y.grad_fn.name())

    (exact_on, bits_on, loss_on, node), (exact_off, bits_off, loss_off, _) = both(monkeypatch, run)
    assert "HGQDenseFn" in node
    assert_same(exact_on, exact_off)
    assert_sums_close(bits_on, bits_off)
    assert_sums_close(loss_on, loss_off)


def test_hgq_dense_ebops_are_the_reports(monkeypatch):
    """The EBOPs the kernel returns for the loss equal linear_cost's for the same widths."""
    with use_kernels(True, monkeypatch):
        layer = _hgq_dense(Stage.FINETUNING)
        layer(torch.randn(8, 16))
        folded = layer.cost(for_loss={})[1]
        _, expected = linear_cost(layer.weight_bits(), layer.input_bits(), layer.kept_weights(),
                                  layer.bias_bits(), 1)
    assert folded.requires_grad
    torch.testing.assert_close(folded.detach(), expected, rtol=1e-6, atol=0.0)
    assert float(expected) > 0 and float((layer.kept_weights() == 0).sum()) > 0


@pytest.mark.parametrize("bits_shape,x_shape", [
    ((64,), (1100, 64)),            # per feature, several tasks of rows
    ((), (70000,)),                 # one parameter, several chunks
    ((6, 1, 1), (300, 6, 8, 8)),    # per conv channel: runs of 64 inside rows
    ((40, 1), (40, 900)),           # per channel of a weight: one row
])
def test_hgq_large_shapes_and_thread_independence(monkeypatch, bits_shape, x_shape):
    g = torch.Generator().manual_seed(7)
    x0 = torch.randn(*x_shape, generator=g) * 4
    coeff = torch.randn(*x_shape, generator=g)

    def run(threads=None):
        before = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        try:
            q = _hgq(bits_shape, 3, 1, seed=8)
            x = x0.clone().requires_grad_(True)
            y = q.forward_relu(x)
            ((y * coeff).sum() + 0.01 * q.bits_for_loss().sum()).backward()
            return [y.detach(), x.grad], list(q.bit_grads())
        finally:
            torch.set_num_threads(before)

    (exact_on, bits_on), (exact_off, bits_off) = both(monkeypatch, run)
    assert_same(exact_on, exact_off)
    assert_sums_close(bits_on, bits_off)
    with use_kernels(True, monkeypatch):  # the summation order does not depend on threads
        one, two = run(1), run(2)
    assert_same(one[0] + one[1], two[0] + two[1])


@pytest.mark.parametrize("shape", [(), (32,)])
def test_relu_fused_into_the_activation_quantizer(monkeypatch, shape):
    g = torch.Generator().manual_seed(9)
    x0 = torch.randn(50, 32, generator=g) * 5
    x0[0, :4] = torch.tensor([0.0, -0.0, float("nan"), -1e-30])

    def run():
        act = PQActivation("relu", input_quantizer=_hgq(shape, 3, 2, seed=10))
        x = x0.clone().requires_grad_(True)
        y = act(x)
        y.nan_to_num(0.0).sum().backward()
        return [y.detach(), x.grad], list(act.input_quantizer.bit_grads())

    (exact_on, bits_on), (exact_off, bits_off) = both(monkeypatch, run)
    assert torch.equal(exact_on[0].isnan(), exact_off[0].isnan())
    assert_same([t.nan_to_num(0.0) for t in exact_on], [t.nan_to_num(0.0) for t in exact_off])
    assert_sums_close([t.nan_to_num(0.0) for t in bits_on], [t.nan_to_num(0.0) for t in bits_off])


def test_hgq_mlp_training_steps_agree(monkeypatch):
    """Three optimizer steps of the HGQ default MLP, every stage: the same model to float rounding
    (bit-parameter gradients are the only inexact part)."""
    def run():
        torch.manual_seed(0)
        cfg = load_config(["quantization=hgq"])
        from pquant.models.mlp import mlp

        model = add_compression_layers(mlp(64, 10, [32, 16]), cfg)
        loss_of = CompressionLoss(model, sections(cfg))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(1)
        x, y = torch.randn(64, 64, generator=g), torch.randint(0, 10, (64,), generator=g)
        for _ in range(3):
            loss = loss_of(Stage.FINETUNING, nn.functional.cross_entropy(model(x), y))
            opt.zero_grad()
            loss.backward()
            opt.step()
        return {n: p.detach().clone() for n, p in model.named_parameters()}

    on, off = both(monkeypatch, run)
    assert on.keys() == off.keys()
    for name in on:
        torch.testing.assert_close(on[name], off[name], rtol=1e-5, atol=1e-5, msg=name)


def test_kernel_loops_run_on_torch_threads(monkeypatch):
    """Built with OpenMP: at::parallel_for uses torch's thread count (serial without -fopenmp,
    which would make the thread-independence test above pass trivially)."""
    with use_kernels(True, monkeypatch):
        before = torch.get_num_threads()
        try:
            torch.set_num_threads(2)
            assert kernels.get().parallel_threads(64) == 2
            torch.set_num_threads(1)
            assert kernels.get().parallel_threads(64) == 1
        finally:
            torch.set_num_threads(before)
