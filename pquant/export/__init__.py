"""Deployment: a finalised pquant model as QONNX and as an hls4ml project, bit for bit.

    from pquant.export import to_qonnx, to_hls4ml
    to_qonnx(model, example_input, "model.qonnx.onnx")
    hls = to_hls4ml(model, example_input, "hls4ml_prj", compile=True); hls.predict(x)

Each PQ layer type states its own export rule (``export_body`` next to its code); the writers
here only know the neutral operations of :mod:`pquant.nn.export_ops`. Needs the ``export`` extra.
Importing this package imports neither onnx, qonnx nor hls4ml.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "to_qonnx": "pquant.export.qonnx_export",
    "run_qonnx": "pquant.export.qonnx_export",
    "to_hls4ml": "pquant.export.hls4ml_export",
    "ExportError": "pquant.nn.export_ops",
    "check_exports": "pquant.export.check",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pquant.export' has no attribute {name!r}")
