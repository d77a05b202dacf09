"""``python -m pquant.export <run_dir | mlflow_run_id> --to qonnx|hls4ml|both``: export a run.

Writes ``model.qonnx.onnx`` and/or ``hls4ml/`` into the run directory, checks them bit for bit
against the finalised model on the run's whole test set, adds the ``export/*`` figures to the
run's ``report.json`` and prints one line. Given an MLflow run id (``--tracking-uri`` as for
``python -m pquant``), the files are written to a download folder and the figures and files are
logged to that MLflow run. Exit status 1 on any mismatch, 2 on a refused export.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pquant.export", description=__doc__.split(
        "\n")[0])
    parser.add_argument("run", help="a finished run's directory (config.yaml, model_final.pt) "
                        "or its MLflow run id")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI for a run id (default as python -m pquant)")
    parser.add_argument("--to", choices=["qonnx", "hls4ml", "both"], default="both")
    parser.add_argument("--backend", default="Vitis", choices=["Vitis", "Vivado"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    import torch
    from hydra.utils import instantiate

    from pquant.errors import ConfigError
    from pquant.export.check import check_exports, summary_line
    from pquant.export.config import export_settings
    from pquant.load import load_run
    from pquant.nn.export_ops import ExportError

    formats = ["qonnx", "hls4ml"] if args.to == "both" else [args.to]
    try:
        export_settings({"export": {"formats": formats, "backend": args.backend}})
        model = load_run(args.run, final=True, tracking_uri=args.tracking_uri)
        run_dir = Path(model.pquant_run_dir)
        data = instantiate(model.pquant_config.data)
        inputs = torch.cat([x for x, _ in data.test_loader(1024)])
        metrics, paths = check_exports(model, inputs, run_dir, formats, backend=args.backend)
    except (ConfigError, ExportError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    report_path = run_dir / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    report.update(metrics)
    report_path.write_text(json.dumps(report, indent=2, sort_keys=True))
    if not Path(args.run).is_dir():  # an MLflow run id: record there too
        _log_to_mlflow(args.run, args.tracking_uri, metrics, [report_path, *paths])
    line = summary_line(metrics)
    print(f"export {args.run}: {line} (files in {run_dir})")
    return 1 if metrics["export/mismatches"] else 0


def _log_to_mlflow(run_id: str, uri: str | None, metrics: dict, paths: list[Path]) -> None:
    import shutil
    import time

    from mlflow.entities import Metric

    from pquant.tracking.mlflow_tracker import default_uri
    from pquant.tracking.store import open_client

    client = open_client(uri or default_uri())
    stamp = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), stamp, 0) for k, v in metrics.items()])
    for path in paths:
        if path.is_dir():
            path = Path(shutil.make_archive(str(path), "zip", path))
        client.log_artifact(run_id, str(path))


if __name__ == "__main__":
    sys.exit(main())
