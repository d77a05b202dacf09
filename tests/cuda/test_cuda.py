"""The torch path on a CUDA device (``pytest -m cuda``; skipped without one).

On a GPU the pure-torch path is the fast path: no host synchronisation inside a training step
(checked with ``torch.cuda.set_sync_debug_mode("error")``), nothing built for the CPU kernels.
``scripts/gpu_check.sh`` runs these and the CUDA benchmark in one go.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from pquant import add_compression_layers, finalize, kernels, load_config
from pquant.pruning.base import EpochInfo, Stage
from pquant.quant.base import Quantizer
from pquant.training.losses import CompressionLoss
from tests.conftest import FAST
from tests.nn.test_layer_contract import CASES, HGQ, QUANTIZED, _build

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]
CUDA = torch.device("cuda")
ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def no_host_sync():
    """Any operation that synchronises with the host raises inside this block."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("overrides", [QUANTIZED, HGQ], ids=["fixed", "hgq"])
@pytest.mark.parametrize("case", list(CASES))
def test_layer_contract_on_cuda(case, overrides, compose):
    torch_layer, model, x = _build(case, overrides, compose)
    reference = copy.deepcopy(torch_layer).to(CUDA)
    model, x = model.to(CUDA), x.to(CUDA)
    assert all(t.device == x.device for t in list(model.parameters()) + list(model.buffers()))
    quantizers = [q for q in model.modules() if isinstance(q, Quantizer)]
    for q in quantizers:  # disabled quantizers: exactly the torch layer, on the device
        q.enabled = False
    for training in (True, False):
        model.train(training)
        reference.train(training)
        assert torch.equal(model(x), reference(x))
    for q in quantizers:
        q.enabled = True
    model.train()
    xg = x.clone().requires_grad_()
    out = model(xg)
    assert out.device == x.device
    (out * torch.randn_like(out)).sum().backward()
    assert xg.grad is not None and xg.grad.device == x.device
    layer = model[0]
    if getattr(layer, "weight", None) is not None:
        assert layer.weight.grad is not None and layer.weight.grad.device == x.device
    if overrides is HGQ:
        grads = [p.grad for q in layer.modules() if isinstance(q, Quantizer) and q.learnable
                 for p in q.parameters()]
        assert grads and all(g is not None and g.device == x.device for g in grads)
    model.eval()
    before = model(x)
    finalize(model)
    assert torch.equal(model(x), before)


def _stage_hooks(model, stage: Stage) -> None:
    for m in model.modules():
        prune = getattr(m, "pruning", None)
        if prune is None:
            continue
        if stage is Stage.TRAINING:
            prune.on_pretraining_end()
            prune.on_epoch_start(EpochInfo(Stage.TRAINING, 30, 60))
        elif stage is Stage.FINETUNING:
            prune.on_finetuning_start(m.weight)


@pytest.mark.parametrize("quantization", ["fixed", "hgq"])
def test_training_step_per_stage_without_host_sync(quantization, monkeypatch):
    monkeypatch.setenv("PQUANT_KERNELS", "auto")
    cfg = load_config([f"quantization={quantization}"])
    from pquant.config.sections import sections
    from pquant.models.mlp import mlp

    assert kernels.prepare(CUDA, torch.float32) == "torch"
    torch.manual_seed(0)
    model = add_compression_layers(mlp(64, 10, [64, 32, 32]), cfg).to(CUDA)
    losses = CompressionLoss(model, sections(cfg))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(256, 64, device=CUDA)
    y = torch.randint(0, 10, (256,), device=CUDA)

    def step(stage):
        loss = losses(stage, nn.functional.cross_entropy(model(x), y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    for stage in Stage:
        _stage_hooks(model, stage)  # (per-epoch bookkeeping may synchronise; steps may not)
        step(stage)  # warm-up: formats and caches for this stage
        with no_host_sync():
            loss = step(stage)
        assert torch.isfinite(loss).item()
    assert all(p.device == x.device for p in model.parameters())


def test_pdp_threshold_without_host_sync():
    from pquant.pruning.pdp import PDP, PDPConfig
    from pquant.pruning.select import midpoint_threshold

    g = torch.Generator().manual_seed(3)
    w_cpu = torch.randn(64, 32, generator=g)
    pdp = PDP(PDPConfig(sparsity=0.7), (64, 32), "linear").to(CUDA)
    pdp.on_pretraining_end()
    pdp.on_epoch_start(EpochInfo(Stage.TRAINING, 30, 60))
    w = w_cpu.to(CUDA).requires_grad_()
    with no_host_sync():
        threshold = midpoint_threshold(w.detach().square(), 100)
        y = pdp(w)
        y.sum().backward()
    assert isinstance(threshold, torch.Tensor) and threshold.is_cuda
    assert float(threshold) == midpoint_threshold(w_cpu.square(), 100)  # the same value
    assert w.grad is not None and w.grad.is_cuda


def test_three_epoch_run_on_cuda(tmp_path):
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true",
               TORCH_EXTENSIONS_DIR=str(tmp_path / "ext"), PYTHONPATH=str(ROOT))
    env.pop("PQUANT_KERNELS", None)
    done = subprocess.run([sys.executable, "-m", "pquant", "device=cuda", *FAST,
                           "training.epochs=3", "training.pretraining_epochs=1"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    (report,) = (tmp_path / "outputs" / "runs").rglob("report.json")
    assert json.loads(report.read_text())["kernels"] == "torch"
    assert not (tmp_path / "ext").exists()  # nothing built, nothing started for a CUDA run
    assert "kernels" not in done.stderr
