"""pquant: train pruned, fixed-point quantized PyTorch models for FPGAs and edge accelerators.

Public API (stable names)::

    from pquant import load_config, add_compression_layers, train_model, compression_report
    from pquant import finalize, load_run          # model = load_run("outputs/runs/...")
    from pquant import StageDriver          # the stage machinery, for your own training loop
    from pquant.quant.fixed_point import quantize

Importing ``pquant`` has no side effects; submodules are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "load_config": "pquant.config.compose",
    "add_compression_layers": "pquant.nn.replace",
    "train_model": "pquant.training.loop",
    "compression_report": "pquant.metrics.report",
    "ConfigError": "pquant.errors",
    "finalize": "pquant.nn.finalize",
    "load_run": "pquant.load",
    "StageDriver": "pquant.training.stages",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from pquant.config.compose import load_config  # noqa: F401
    from pquant.errors import ConfigError  # noqa: F401
    from pquant.load import load_run  # noqa: F401
    from pquant.metrics.report import compression_report  # noqa: F401
    from pquant.nn.finalize import finalize  # noqa: F401
    from pquant.nn.replace import add_compression_layers  # noqa: F401
    from pquant.training.loop import train_model  # noqa: F401
    from pquant.training.stages import StageDriver  # noqa: F401


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pquant' has no attribute {name!r}")
