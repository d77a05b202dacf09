"""Write the requested exports of a finalised model and check them bit for bit."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

QONNX_FILE = "model.qonnx.onnx"
HLS_DIR = "hls4ml"


class ExportMismatch(RuntimeError):
    """An exported model computes something else than the finalised pquant model."""



def _mismatches(out: np.ndarray, ref: np.ndarray) -> int:
    """Samples whose outputs differ in any element (raw values, not argmax)."""
    out = np.asarray(out, dtype=np.float64).reshape(ref.shape[0], -1)
    return int(np.any(out != ref.reshape(ref.shape[0], -1), axis=1).sum())


def check_exports(model: nn.Module, inputs: torch.Tensor, out_dir: str | Path,
                  formats: list[str], backend: str = "Vitis",
                  io_type: str = "io_parallel") -> tuple[dict[str, float], list[Path]]:
    """Export ``model`` to each of ``formats`` under ``out_dir`` and compare with it.

    Args:
        model: the finalised model (eval mode is set).
        inputs: the check inputs ``(N, *shape)`` (the test set).
        out_dir: where ``model.qonnx.onnx`` / ``hls4ml/`` are written.
        formats: subset of ``["qonnx", "hls4ml"]``.

    Returns:
        ``(metrics, paths)``: ``export/mismatches`` (samples differing in any output, summed over
        the formats), ``export/checked_samples``, per format ``export/<fmt>/mismatches`` and
        ``export/<fmt>/export_seconds`` (+ ``compile_seconds``, ``check_seconds``); the files
        written.
    """
    from pquant.export.hls4ml_export import to_hls4ml
    from pquant.export.qonnx_export import run_qonnx, to_qonnx

    out_dir = Path(out_dir)
    model.eval()
    inputs = inputs.detach().cpu().float()
    with torch.no_grad():
        ref = model(inputs).double().numpy()
    metrics: dict[str, float] = {"export/checked_samples": float(inputs.shape[0])}
    paths: list[Path] = []
    total = 0
    if "qonnx" in formats:
        t0 = time.perf_counter()
        path = to_qonnx(model, inputs[:1], out_dir / QONNX_FILE)
        t1 = time.perf_counter()
        bad = _mismatches(run_qonnx(path, inputs.numpy()), ref)
        t2 = time.perf_counter()
        metrics.update({"export/qonnx/mismatches": float(bad),
                        "export/qonnx/export_seconds": t1 - t0,
                        "export/qonnx/check_seconds": t2 - t1})
        total += bad
        paths.append(path)
    if "hls4ml" in formats:
        t0 = time.perf_counter()
        hls = to_hls4ml(model, inputs[:1], out_dir / HLS_DIR, backend=backend, io_type=io_type)
        t1 = time.perf_counter()
        hls.compile()
        t2 = time.perf_counter()
        bad = _mismatches(hls.predict(inputs), ref)
        t3 = time.perf_counter()
        metrics.update({"export/hls4ml/mismatches": float(bad),
                        "export/hls4ml/export_seconds": t1 - t0,
                        "export/hls4ml/compile_seconds": t2 - t1,
                        "export/hls4ml/check_seconds": t3 - t2})
        total += bad
        paths.append(out_dir / HLS_DIR)
    metrics["export/mismatches"] = float(total)
    for fmt in formats:
        log.info("export %s: %d of %d samples differ", fmt,
                 int(metrics[f"export/{fmt}/mismatches"]), inputs.shape[0])
    return metrics, paths


def summary_line(metrics: dict[str, float]) -> str:
    """One line for the run summary."""
    parts = []
    for fmt in ("qonnx", "hls4ml"):
        key = f"export/{fmt}/mismatches"
        if key in metrics:
            parts.append(f"{fmt} {int(metrics[key])} mismatches")
    n = int(metrics.get("export/checked_samples", 0))
    verdict = "bit-exact" if metrics.get("export/mismatches", 1) == 0 else "FAILED"
    return f"{verdict}: {', '.join(parts)} on {n} test samples"


def export_run(model: nn.Module, data, settings, out: Path, tracker, report: dict,
               step: int) -> str:
    """After training (``export=...``): write and check the exports of the finalised ``model``
    on the whole test set of ``data``, record the figures (``report`` is updated and rewritten,
    the tracker gets the metrics and the files) and return the summary line.

    Raises:
        ExportMismatch: any sample differs (the run fails).
    """
    import json
    import shutil

    inputs = torch.cat([x for x, _ in data.test_loader(1024)])
    metrics, paths = check_exports(model.cpu(), inputs, out, settings.formats,
                                   backend=settings.backend, io_type=settings.io_type)
    tracker.log_metrics(metrics, step=step)
    report.update(metrics)
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    for path in paths:
        if path.is_dir():
            path = Path(shutil.make_archive(str(path), "zip", path))
        tracker.log_artifact(path)
    line = summary_line(metrics)
    if metrics["export/mismatches"]:
        raise ExportMismatch(f"export failed: {line} (files in {out})")
    return line
