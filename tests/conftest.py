"""Shared fixtures: compose configs like the CLI, tiny models and data, env safety."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.pop("MLFLOW_TRACKING_URI", None)

#: overrides that make any run tiny: synthetic data, few epochs, no tracking.
FAST = [
    "data=synthetic",
    "training.epochs=4",
    "training.pretraining_epochs=1",
    "training.fine_tuning_epochs=1",
    "training.batch_size=64",
    "training.progress=false",
    "pruning.epsilon=0.5",
    "tracking=none",
]


@pytest.fixture
def compose():
    """``compose(overrides)`` -> composed config, as ``python -m pquant`` would build it."""
    from pquant import load_config

    return lambda overrides=(): load_config(list(overrides))


@pytest.fixture
def fast_overrides():
    return list(FAST)


@pytest.fixture
def tiny_mlp():
    def build(n_in: int = 8, n_out: int = 3, hidden=(16, 8), activation: str = "relu"):
        from pquant.models.mlp import mlp

        torch.manual_seed(0)
        return mlp(n_in, n_out, hidden, activation)

    return build
