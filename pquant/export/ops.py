"""The neutral export operations (their code is :mod:`pquant.nn.export_ops`, beside the layers that
describe themselves with them; the writers here import them from this module)."""

from __future__ import annotations

from pquant.nn.export_ops import (
    AffineOp,
    AvgPoolOp,
    ConvOp,
    ExportError,
    LinearOp,
    QuantOp,
    ReluOp,
    ReshapeOp,
    Step,
    array,
    quant_op,
)

__all__ = ["AffineOp", "AvgPoolOp", "ConvOp", "ExportError", "LinearOp", "QuantOp", "ReluOp",
           "ReshapeOp", "Step", "array", "quant_op"]
