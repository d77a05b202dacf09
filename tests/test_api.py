"""The public API and import hygiene."""

from __future__ import annotations

import subprocess
import sys


def test_public_names():
    import pquant
    from pquant.quant.fixed_point import quantize

    for name in ("load_config", "add_compression_layers", "train_model", "compression_report"):
        assert callable(getattr(pquant, name))
    assert callable(quantize)


def test_import_has_no_side_effects():
    code = ("import os, sys; before = dict(os.environ); import pquant; "
            "from hydra.core.config_store import ConfigStore; "
            "print(os.environ == before, 'torch' in sys.modules, 'mlflow' in sys.modules, "
            "'schema' in ConfigStore.instance().repo)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == ["True", "False", "False", "False"], out.stderr


def test_library_workflow_without_the_command_line():
    import torch

    from pquant import add_compression_layers, compression_report, load_config, train_model
    from pquant.data.synthetic import SyntheticData
    from pquant.models.mlp import mlp

    torch.manual_seed(0)
    cfg = load_config(["training.epochs=3", "training.pretraining_epochs=0",
                       "pruning.epsilon=0.5", "pruning.sparsity=0.5", "training.progress=false"])
    data = SyntheticData(n_samples=200, n_features=8, n_classes=3)
    model = add_compression_layers(mlp(8, 3, [16]), cfg)
    result = train_model(model, cfg, data.train_loader(32), data.val_loader(64))
    report = compression_report(model, data.example_input(2))
    assert len(result.history) == 3
    assert abs(report["sparsity/global"] - 0.5) < 0.02
