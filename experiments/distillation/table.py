"""Summarise the distillation study's report.json files as a markdown table (argv[1]: out dir)."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

KEYS = ("test/accuracy", "val/accuracy", "sparsity/global", "bits/weight/mean")


def main(out: Path) -> None:
    rows = {"teacher (float, dense)": [out / "teacher"],
            "student alone (PDP 80 %, 8-bit)": sorted(out.glob("alone_*")),
            "student + KD (PDP 80 %, 8-bit)": sorted(out.glob("kd_*"))}
    print("| model | runs | " + " | ".join(KEYS) + " |")
    print("|---|---|" + "---|" * len(KEYS))
    for name, dirs in rows.items():
        reports = [json.loads((d / "report.json").read_text()) for d in dirs]
        cells = []
        for key in KEYS:
            values = [r[key] for r in reports]
            mean = statistics.mean(values)
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{mean:.4f} ± {sd:.4f}" if len(values) > 1 else f"{mean:.4f}")
        print(f"| {name} | {len(reports)} | " + " | ".join(cells) + " |")
    print()
    print("Per seed (test/accuracy): " + ", ".join(
        f"{d.name} {json.loads((d / 'report.json').read_text())['test/accuracy']:.4f}"
        for d in sorted(out.glob("alone_*")) + sorted(out.glob("kd_*"))))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
