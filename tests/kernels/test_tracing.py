"""torch.compile and torch.export of converted models: the kernels step aside while tracing (the
traced graph is the torch path) and the results equal eager ones. Run with the kernels on where
they build, and on the torch path in CI's PQUANT_KERNELS=off pass."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from pquant import add_compression_layers, kernels, load_config
from pquant.pruning.base import EpochInfo, Stage
from tests.kernels.test_fused import outer_off, require_kernels


@pytest.fixture
def kernel_setting(monkeypatch):
    """The kernels on (when they build here), else the torch path."""
    if not outer_off():
        try:
            require_kernels(monkeypatch)
        except pytest.skip.Exception:
            monkeypatch.setenv("PQUANT_KERNELS", "off")
    kernels.reset()
    yield
    torch._dynamo.reset()
    monkeypatch.undo()
    kernels.reset()


def _model(name: str, quantization: str = "fixed"):
    cfg = load_config([f"model={name}", f"quantization={quantization}"])
    torch.manual_seed(0)
    model = instantiate(cfg.model, input_size=64, output_size=10)
    model = add_compression_layers(model, cfg)
    for m in model.modules():  # PDP's training stage: the soft mask with a threshold
        prune = getattr(m, "pruning", None)
        if prune is not None:
            prune.on_pretraining_end()
            prune.on_epoch_start(EpochInfo(Stage.TRAINING, 30, 60))
    x = torch.randn(32, 64, generator=torch.Generator().manual_seed(1))
    model.train()(x)  # formats settle as in a run
    return model, x


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_export_equals_eager(kernel_setting, name):
    model, x = _model(name)
    model.eval()
    with torch.no_grad():
        expected = model(x)
    program = torch.export.export(model, (x,))
    assert torch.equal(program.module()(x), expected)
    with torch.no_grad():  # no traced tensor left behind in the model's caches
        assert torch.equal(model(x), expected)
    for m in model.modules():
        last = m.__dict__.get("_last_weight")
        assert last is None or type(last) is torch.Tensor


def _step(model, x, y):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss.detach(), [p.detach().clone() for p in model.parameters()]


@pytest.mark.slow
@pytest.mark.parametrize("name,quantization,backend", [
    ("mlp", "fixed", "inductor"),  # the default model, the default backend
    ("cnn", "fixed", "aot_eager"),  # (dynamo's tracing is the same; inductor is slow to build)
    ("mlp", "hgq", "aot_eager"),
])
def test_compile_equals_eager(kernel_setting, name, quantization, backend):
    model, x = _model(name, quantization)
    y = torch.randint(0, 10, (32,), generator=torch.Generator().manual_seed(2))
    compiled = torch.compile(_model(name, quantization)[0], backend=backend)

    model.eval(), compiled.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=0, atol=1e-6)
    model.train(), compiled.train()
    loss, params = _step(model, x, y)
    loss_c, params_c = _step(compiled, x, y)
    torch.testing.assert_close(loss_c, loss, rtol=1e-6, atol=1e-6)
    for p, q in zip(params, params_c, strict=True):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)
