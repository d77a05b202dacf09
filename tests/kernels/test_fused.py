"""The fused CPU kernels give exactly the pure-torch results (values and gradients)."""

from __future__ import annotations

import contextlib
import copy
import math
import os

import numpy as np
import pytest
import torch
from torch import nn

from pquant import add_compression_layers, kernels, load_config
from pquant.nn.dense import PQDense
from pquant.pruning.base import EpochInfo, Stage
from pquant.pruning.pdp import PDP, PDPConfig
from pquant.quant.granularity import Granularity
from pquant.quant.modes import OverflowMode, RoundMode
from pquant.quant.quantizer import FixedPointQuantizer

_OUTER_SETTING = os.environ.get("PQUANT_KERNELS", "").strip().lower()


def outer_off() -> bool:
    """Whether the suite runs with PQUANT_KERNELS=off (CI's torch-path pass)."""
    return _OUTER_SETTING in ("off", "0", "false", "no")


def require_kernels(monkeypatch) -> None:
    """Skip (with the reason) when the kernels cannot be built here -- except in CI (``CI=true``),
    where they are mandatory. Leaves PQUANT_KERNELS=on set."""
    if outer_off():
        pytest.skip("PQUANT_KERNELS=off: the torch-path pass")
    monkeypatch.setenv("PQUANT_KERNELS", "on")
    kernels.reset()
    try:
        kernels.get()
    except RuntimeError as exc:
        monkeypatch.delenv("PQUANT_KERNELS")
        kernels.reset()
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            raise
        pytest.skip(f"fused CPU kernels unavailable here: {exc}")


@contextlib.contextmanager
def use_kernels(on: bool, monkeypatch):
    if on:
        require_kernels(monkeypatch)
    monkeypatch.setenv("PQUANT_KERNELS", "on" if on else "off")
    kernels.reset()
    try:
        yield
    finally:
        monkeypatch.delenv("PQUANT_KERNELS")
        kernels.reset()


def both(monkeypatch, fn):
    """``fn()`` with the kernels on and off (fresh objects each time)."""
    out = []
    for on in (True, False):
        with use_kernels(on, monkeypatch):
            out.append(fn())
    return out


def assert_same(a, b):
    for x, y in zip(a, b, strict=True):
        if x is None or y is None:
            assert x is None and y is None
            continue
        assert x.shape == y.shape
        assert torch.equal(x, y), (x - y).abs().max()


def assert_sums_close(a, b):
    """Gradients of HGQ bit parameters: sums over the quantized elements, which the kernel adds
    in its own order (float32 blocks, float64 beyond) and the torch path in float64 -- equal to
    float rounding of the terms."""
    for x, y in zip(a, b, strict=True):
        assert x.shape == y.shape
        scale = max(1.0, float(y.abs().max()))
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6 * scale)


def _values(n: int = 4096) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    lsb_halves = torch.arange(-600, 600, dtype=torch.float32) / 64.0  # ties of every grid used
    extremes = torch.tensor([0.0, -0.0, 1e-30, -1e-30, 1e6, -1e6, 7.99, -8.0, 8.0])
    return torch.cat([torch.randn(n, generator=g) * 6, lsb_halves, extremes])


FORMATS = [(1, 3, 4), (0, 3, 5), (1, 0, 7), (1, -2, 5), (1, 4, -1), (0, 0, 1)]


@pytest.mark.parametrize("round_mode", list(RoundMode))
@pytest.mark.parametrize("overflow_mode", [OverflowMode.SAT, OverflowMode.SAT_SYM])
@pytest.mark.parametrize("training", [True, False])
def test_scalar_quantizer_matches(monkeypatch, round_mode, overflow_mode, training):
    x0 = _values()

    def run():
        outs = []
        for k, i, f in FORMATS:
            q = FixedPointQuantizer(k, i, f, round_mode, overflow_mode).train(training)
            x = x0.clone().requires_grad_(True)
            y = q(x)
            (y * torch.linspace(-1, 1, y.numel())).sum().backward()
            outs += [y.detach(), x.grad]
        return outs

    on, off = both(monkeypatch, run)
    assert_same(on, off)


@pytest.mark.parametrize("round_mode", [RoundMode.RND, RoundMode.TRN, RoundMode.RND_CONV,
                                        RoundMode.RND_ZERO])
def test_per_channel_and_per_weight_match(monkeypatch, round_mode):
    g = torch.Generator().manual_seed(1)
    w0 = torch.randn(16, 8, generator=g) * 3

    def run():
        outs = []
        for shape in ((16, 1), (16, 8)):
            i = torch.randint(-1, 3, shape, generator=torch.Generator().manual_seed(2)).float()
            q = FixedPointQuantizer(1, 0, 4, round_mode, "SAT", shape=shape)
            q.set_format(i=i, f=6 - i)
            w = w0.clone().requires_grad_(True)
            y = q(w)
            (y * y).sum().backward()
            outs += [y.detach(), w.grad]
            if shape == (16, 1):  # another shape than the spec was built for still works
                outs.append(q(w0[:, :3]).detach())
        return outs

    on, off = both(monkeypatch, run)
    assert_same(on, off)


def test_wrap_modes_fall_back(monkeypatch):
    x0 = _values()

    def run():
        q = FixedPointQuantizer(1, 2, 3, "RND", "WRAP").eval()
        return [q(x0)]

    on, off = both(monkeypatch, run)
    assert_same(on, off)


# ---------------------------------------------------------------------------------- dense layer
def _dense(stage: Stage, *, bias=True, structured=False, per_channel=False, quant_in=True,
           bypass_out=False):
    torch.manual_seed(3)
    q = lambda k, i, f: FixedPointQuantizer(k, i, f, "RND", "SAT")  # noqa: E731
    weight_q = q(1, 0, 7)
    if per_channel:
        weight_q = FixedPointQuantizer(1, 0, 7, "RND", "SAT", shape=(24, 1))
        weight_q.set_format(i=torch.arange(24.0).remainder(3).view(24, 1) - 1)
    pruning = PDP(PDPConfig(sparsity=0.5, structured_pruning=structured), (24, 16), "linear")
    layer = PQDense(16, 24, bias=bias, input_quantizer=q(1, 3, 4) if quant_in else None,
                    weight_quantizer=weight_q, bias_quantizer=q(1, 0, 7) if bias else None,
                    output_quantizer=q(1, 3, 4), pruning=pruning)
    nn.init.uniform_(layer.weight, -1.2, 1.2)  # some weights saturate the <8,1> format
    if bias:
        nn.init.uniform_(layer.bias, -1.5, 1.5)
    if stage is not Stage.PRETRAINING:
        pruning.on_pretraining_end()
        pruning.on_epoch_start(EpochInfo(Stage.TRAINING, 0, 2))
    if stage is Stage.FINETUNING:
        pruning.on_finetuning_start(layer.weight)
    if bypass_out:
        layer.output_quantizer.enabled = False
    return layer


@pytest.mark.parametrize("stage", list(Stage))
@pytest.mark.parametrize("variant", [
    {}, {"bias": False}, {"structured": True}, {"per_channel": True}, {"quant_in": False},
    {"bypass_out": True},
])
def test_dense_layer_matches(monkeypatch, stage, variant):
    g = torch.Generator().manual_seed(4)
    x0 = torch.randn(64, 16, generator=g) * 4
    grad_out = torch.randn(64, 24, generator=g)

    def run():
        layer = _dense(stage, **variant)
        x = x0.clone().requires_grad_(True)
        y = layer(x)
        y.backward(grad_out)
        return [y.detach(), x.grad, layer.weight.grad, None if layer.bias is None else
                layer.bias.grad, layer.effective_weight().detach()]

    on, off = both(monkeypatch, run)
    assert_same(on, off)


def test_dense_uses_one_autograd_node(monkeypatch):
    with use_kernels(True, monkeypatch):
        layer = _dense(Stage.FINETUNING)
        y = layer(torch.randn(8, 16))
        assert "DenseFn" in y.grad_fn.name()
        # weight and bias feed the node directly: no separate mask/quantizer/addmm nodes
        leaves = [type(fn).__name__ for fn, _ in y.grad_fn.next_functions if fn is not None]
        assert leaves == ["AccumulateGrad", "AccumulateGrad"]
        kept = layer.kept_weights()  # after a fused forward: from the effective weight
        assert torch.equal(kept, (layer.effective_weight() != 0).float())
        assert torch.equal(kept * layer.hard_mask(), kept) and kept.sum() < kept.numel()
        with torch.no_grad():  # eval without a graph keeps the cached generic path
            assert layer.eval()(torch.randn(8, 16)).grad_fn is None
        x3 = torch.randn(2, 8, 16)  # 3-D input: generic path
        assert layer.train()(x3).grad_fn is not None
        assert layer(x3.double().float()).shape == (2, 8, 24)


def test_training_steps_identical(monkeypatch):
    """Several optimizer steps of the default MLP in every stage: same parameters bit for bit."""
    cfg = load_config([])
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(),
                         nn.Linear(32, 10))
    x = torch.randn(256, 64)
    y = torch.randint(0, 10, (256,))

    def run():
        model = add_compression_layers(copy.deepcopy(base), cfg)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        methods = [m.pruning for m in model.modules() if isinstance(m, PQDense)]
        for stage in Stage:
            for m, layer in zip(methods, [m for m in model.modules() if isinstance(m, PQDense)]):
                if stage is Stage.TRAINING:
                    m.on_pretraining_end()
                    m.on_epoch_start(EpochInfo(Stage.TRAINING, 30, 60))
                elif stage is Stage.FINETUNING:
                    m.on_finetuning_start(layer.weight)
            for _ in range(3):
                loss = nn.functional.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
        return [p.detach().clone() for p in model.parameters()]

    on, off = both(monkeypatch, run)
    assert_same(on, off)


def test_setting_is_validated(monkeypatch):
    monkeypatch.setenv("PQUANT_KERNELS", "fast")
    with pytest.raises(ValueError, match=r"PQUANT_KERNELS must be one of \['auto', 'on', 'off'\]"):
        kernels.setting()
    monkeypatch.setenv("PQUANT_KERNELS", "0")
    assert kernels.setting() == "off"
    kernels.reset()
    assert "off" in kernels.status()
    monkeypatch.delenv("PQUANT_KERNELS")
    kernels.reset()


@pytest.mark.parametrize("case", ["random", "ties", "zeros", "tiny", "huge"])
def test_radix_threshold_matches_numpy(monkeypatch, case):
    from pquant.pruning.select import midpoint_threshold

    with use_kernels(True, monkeypatch):
        ext = kernels.get()
        g = torch.Generator().manual_seed(5)
        w = torch.randn(4096, generator=g)
        if case == "ties":
            w = torch.randint(-8, 9, (4096,), generator=g).float() / 4
        elif case == "zeros":
            w[::3] = 0.0
        elif case == "tiny":
            w = w * 1e-20  # squares are denormal
        elif case == "huge":
            w[:7] = float("inf")
        scores = w.square()
        for n_below in (1, 2, 100, 1365, 2048, 4000, 4094, 4095):
            with np.errstate(invalid="ignore"):  # inf - inf in the "huge" case
                expected = midpoint_threshold(scores, n_below)
            got = ext.midpoint_threshold(scores, n_below)
            assert got == expected or (math.isnan(got) and math.isnan(expected))


@pytest.mark.parametrize("epoch", [0, 20, 80])
def test_pdp_training_stage_matches_at_every_ratio(monkeypatch, epoch):
    g = torch.Generator().manual_seed(6)
    x0 = torch.randn(64, 16, generator=g)

    def run():
        layer = _dense(Stage.TRAINING)
        layer.pruning.on_epoch_start(EpochInfo(Stage.TRAINING, epoch, 100))
        with torch.no_grad():  # ties in the scores
            layer.weight[:4] = layer.weight[4:8]
        x = x0.clone().requires_grad_(True)
        y = layer(x)
        (y ** 2).sum().backward()
        return [y.detach(), x.grad, layer.weight.grad, layer.bias.grad]

    on, off = both(monkeypatch, run)
    assert_same(on, off)


@pytest.mark.parametrize("round_mode", list(RoundMode))
@pytest.mark.parametrize("granularity", ["per_channel", "per_weight"])
@pytest.mark.parametrize("overflow_mode", ["SAT", "SAT_SYM"])
def test_range_split_matches(monkeypatch, round_mode, granularity, overflow_mode):
    from pquant.quant.adaptive import RangeSplitQuantizer

    g = torch.Generator().manual_seed(7)
    w0 = torch.randn(12, 9, generator=g) * torch.logspace(-3, 2, 12).view(12, 1)
    w0[3] = 0.0  # an all-zero channel
    w0[5, :4] = torch.tensor([0.5, -0.25, 0.125, 1.0])  # exact powers of two and ties

    def run():
        outs = []
        for k, width in ((1, 8), (0, 4), (1, 2)):
            q = RangeSplitQuantizer(k, width, round_mode, overflow_mode, Granularity[granularity])
            w = w0.clone().requires_grad_(True)
            y = q(w)
            (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
            outs += [y.detach(), w.grad, q(w0[0]).detach()]  # 1-D: split per element
        return outs

    on, off = both(monkeypatch, run)
    assert_same(on, off)


@pytest.mark.parametrize("stage", list(Stage))
def test_dense_with_range_split_weights_matches(monkeypatch, stage):
    from pquant.quant.adaptive import RangeSplitQuantizer

    g = torch.Generator().manual_seed(8)
    x0 = torch.randn(32, 16, generator=g) * 4

    def run():
        layer = _dense(stage)
        layer.weight_quantizer = RangeSplitQuantizer(1, 6, "RND", "SAT", Granularity.per_channel)
        x = x0.clone().requires_grad_(True)
        y = layer(x)
        (y ** 2).sum().backward()
        return [y.detach(), x.grad, layer.weight.grad, layer.bias.grad]

    on, off = both(monkeypatch, run)
    assert_same(on, off)
    with use_kernels(True, monkeypatch):
        layer = _dense(stage)
        layer.weight_quantizer = RangeSplitQuantizer(1, 6, "RND", "SAT", Granularity.per_channel)
        assert "DenseFn" in layer(x0.requires_grad_(True)).grad_fn.name()


@pytest.mark.parametrize("round_mode", list(RoundMode))
@pytest.mark.parametrize("overflow_mode", ["SAT", "SAT_SYM"])
@pytest.mark.parametrize("shape", ["tensor", "feature", "weight", "channel"])
def test_hgq_matches(monkeypatch, round_mode, overflow_mode, shape):
    from pquant.quant.hgq import HGQQuantizer

    g = torch.Generator().manual_seed(9)
    x0 = torch.randn(32, 6, generator=g) * 3
    x0[0] = torch.tensor([0.5, -0.25, 8.0, -8.0, 0.03125, 100.0])  # ties and clipping
    bit_shape = {"tensor": (), "feature": (6,), "weight": (32, 6), "channel": (32, 1)}[shape]
    f0 = torch.randint(-1, 6, bit_shape, generator=g).float() + 0.4 * torch.rand(bit_shape, generator=g)
    i0 = torch.randint(-2, 4, bit_shape, generator=g).float() - 0.3
    k0 = torch.randint(0, 2, bit_shape, generator=g).float()
    coeff = torch.randn(32, 6, generator=g)

    def run():
        outs = []
        for training in (True, False):
            q = HGQQuantizer(1, 3, 4, round_mode, overflow_mode, shape=bit_shape).train(training)
            with torch.no_grad():
                q.f.copy_(f0)
                q.i.copy_(i0)
                q.k.copy_(k0)
            x = x0.clone().requires_grad_(True)
            y = q(x)
            loss = (y * coeff).sum() + 1e-2 * q.bits_for_loss().sum()
            loss.backward()
            outs += [y.detach(), x.grad, *q.bit_grads()]
        return outs

    on, off = both(monkeypatch, run)
    exact = [t for n, t in enumerate(on) if n % 4 < 2], [t for n, t in enumerate(off) if n % 4 < 2]
    assert_same(*exact)  # values and input gradients: bit for bit
    assert_sums_close([t for n, t in enumerate(on) if n % 4 >= 2],
                      [t for n, t in enumerate(off) if n % 4 >= 2])


def break_build(monkeypatch, tmp_path, setting: str) -> None:
    """No working compiler (``CXX=false``) and an empty kernel cache, under ``setting``."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    monkeypatch.setenv("CXX", "false")
    monkeypatch.setattr(kernels, "_built", None)
    monkeypatch.setenv("PQUANT_KERNELS", setting)
    kernels.reset()


def test_failed_build_falls_back_or_fails(monkeypatch, tmp_path, capfd):
    break_build(monkeypatch, tmp_path, "auto")
    assert kernels.get() is None
    lines = capfd.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "fused CPU kernels unavailable (no working C++ compiler" in lines[0]
    assert "python -m pquant.kernels" in lines[0]  # how to retry
    q = FixedPointQuantizer(1, 3, 4)  # the torch path still works
    assert torch.equal(q(torch.tensor([0.03, 9.0])), torch.tensor([0.0, 7.9375]))
    monkeypatch.setenv("PQUANT_KERNELS", "on")
    kernels.reset()
    with pytest.raises(RuntimeError, match="PQUANT_KERNELS=on but the fused CPU kernels could "
                                           "not be built: .*an earlier build; run `python -m"):
        kernels.get()
    monkeypatch.delenv("PQUANT_KERNELS")
    monkeypatch.undo()
    kernels.reset()


@pytest.mark.parametrize("shape", [(24, 16), (8, 4, 3, 3)])
def test_pdp_weight_outside_the_dense_kernel_matches(monkeypatch, shape):
    g = torch.Generator().manual_seed(10)
    w0 = torch.randn(shape, generator=g)
    w0.view(-1)[:5] = w0.view(-1)[5:10]  # ties
    coeff = torch.randn(shape, generator=g)

    def run():
        pdp = PDP(PDPConfig(sparsity=0.7), shape, "conv" if len(shape) == 4 else "linear")
        pdp.on_pretraining_end()
        pdp.on_epoch_start(EpochInfo(Stage.TRAINING, 30, 100))
        w = w0.clone().requires_grad_(True)
        y = pdp(w)
        (y * coeff).sum().backward()
        return [y.detach(), w.grad]

    on, off = both(monkeypatch, run)
    assert_same(on, off)


def test_runner_reports_kernel_settings_cleanly(monkeypatch, tmp_path):
    from pquant.errors import ConfigError
    from pquant.runner import run
    from tests.conftest import FAST

    cfg = load_config(FAST)
    monkeypatch.setenv("PQUANT_KERNELS", "fast")
    kernels.reset()
    with pytest.raises(ConfigError, match=r"environment variable PQUANT_KERNELS must be one of"):
        run(cfg, output_dir=str(tmp_path))
    assert not (tmp_path / "report.json").exists()

    break_build(monkeypatch, tmp_path, "on")
    with pytest.raises(ConfigError, match="PQUANT_KERNELS=on but the fused CPU kernels could not"):
        run(cfg, output_dir=str(tmp_path))
    monkeypatch.undo()
    kernels.reset()
