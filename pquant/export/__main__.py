"""``python -m pquant.export <run_dir> --to qonnx|hls4ml|both``: export a finished run.

Writes ``model.qonnx.onnx`` and/or ``hls4ml/`` into the run directory, checks them bit for bit
against the finalised model on the run's whole test set, adds the ``export/*`` figures to the
run's ``report.json`` and prints one line. Exit status 1 on any mismatch, 2 on a refused export.
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
    parser.add_argument("run_dir", help="a finished run's directory (config.yaml, model_final.pt)")
    parser.add_argument("--to", choices=["qonnx", "hls4ml", "both"], default="both")
    parser.add_argument("--backend", default="Vitis", choices=["Vitis", "Vivado"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    import torch
    from hydra.utils import instantiate

    from pquant.config.errors import ConfigError
    from pquant.export.check import check_exports, summary_line
    from pquant.export.config import export_settings
    from pquant.export.ops import ExportError
    from pquant.load import load_run

    formats = ["qonnx", "hls4ml"] if args.to == "both" else [args.to]
    run_dir = Path(args.run_dir)
    try:
        export_settings({"export": {"formats": formats, "backend": args.backend}})
        model = load_run(run_dir, final=True)
        data = instantiate(model.pquant_config.data)
        inputs = torch.cat([x for x, _ in data.test_loader(1024)])
        metrics, _ = check_exports(model, inputs, run_dir, formats, backend=args.backend)
    except (ConfigError, ExportError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    report_path = run_dir / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    report.update(metrics)
    report_path.write_text(json.dumps(report, indent=2, sort_keys=True))
    line = summary_line(metrics)
    print(f"export {run_dir}: {line}")
    return 1 if metrics["export/mismatches"] else 0


if __name__ == "__main__":
    sys.exit(main())
