"""FITCompress at compression_goal 0.10 against uniform compression of the same size.

For each model (digits MLP, CNN) and seed: one FITCompress run (per-layer widths + searched
global mask, frozen during training), then one uniform run -- PDP sparsity ``s`` and one weight
width ``b`` for every layer -- with ``b`` the FITCompress run's mean kept-weight width (rounded)
and ``s = 1 - 32 * size / b`` so that the weights' size relative to float32 matches the size the
FITCompress model ended with. Writes results.csv, README table rows (results.md) and
accuracy_vs_size.png here.

    python experiments/fitcompress/run.py [--jobs 4] [--pretraining-epochs 20 --epochs 60]
        [--epsilon 0.05] [--tag _long]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import mean, stdev

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OUT = ROOT / "outputs" / "experiments" / "fitcompress"
TAG = ""  #: suffix of the output files and run folders (--tag)


def _run(name: str, overrides: list[str]) -> dict:
    run_dir = OUT / TAG / name
    report = run_dir / "report.json"
    if not report.is_file():
        cmd = [sys.executable, "-m", "pquant", *overrides, "tracking=none",
               "training.progress=false", f"hydra.run.dir={run_dir}"]
        print(" ".join(cmd[1:]), flush=True)
        env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{name} failed:\n{done.stderr[-3000:]}")
    data = json.loads(report.read_text())
    data["command"] = "python -m pquant " + " ".join(overrides)
    return data


def _pair(model: str, seed: int, common: list[str], goal: float) -> list[dict]:
    base = [f"model={model}", f"seed={seed}", *common]
    fit = _run(f"{model}-{seed}-fitcompress", [
        *base, "fitcompress=on", "fitcompress.optimize_pruning=true",
        f"fitcompress.compression_goal={goal}"])
    size = fit["compression/weights"]
    bits = max(2, round(fit["bits/weight/mean"]))
    sparsity = min(max(1.0 - 32.0 * size / bits, 0.0), 0.99)
    uniform = _run(f"{model}-{seed}-uniform", [
        *base, f"pruning.sparsity={sparsity:.4f}",
        "quantization.default_weight_keep_negatives=1",
        "quantization.default_weight_integer_bits=0",
        f"quantization.default_weight_fractional_bits={bits - 1}"])
    rows = []
    for method, r in (("fitcompress", fit), ("uniform", uniform)):
        rows.append({
            "model": model, "seed": seed, "method": method,
            "test_accuracy": r["test/accuracy"], "val_accuracy": r["val/accuracy"],
            "size": r["compression/weights"] if "compression/weights" in r else None,
            "bits_mean": r["bits/weight/mean"], "sparsity": r["sparsity/global"],
            "ebops": r["ebops/total"], "search_time_s": r.get("fitcompress/search_time_s"),
            "command": r["command"],
        })
    return rows


def _size(report_row: dict) -> float:
    return report_row["size"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--pretraining-epochs", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--epsilon", type=float, default=0.05)
    parser.add_argument("--goal", type=float, default=0.10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn"])
    parser.add_argument("--tag", default="", help="suffix of results<tag>.csv/.md/.png")
    args = parser.parse_args()
    global TAG
    TAG = args.tag
    common = [f"training.pretraining_epochs={args.pretraining_epochs}",
              f"training.epochs={args.epochs}", f"pruning.epsilon={args.epsilon}"]
    jobs = [(m, s) for m in args.models for s in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda ms: _pair(*ms, common, args.goal), jobs))
    rows = [row for pair in results for row in pair]
    with open(HERE / f"results{TAG}.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    _table(rows)
    _plot(rows)



def _table(rows: list[dict]) -> None:
    lines = ["| model | method | test acc. (mean ± std, 3 seeds) | size (of float32) | "
             "weight bits | sparsity | EBOPs |", "|---|---|---|---|---|---|---|"]
    for model in dict.fromkeys(r["model"] for r in rows):
        for method in ("fitcompress", "uniform"):
            sel = [r for r in rows if r["model"] == model and r["method"] == method]
            acc = [r["test_accuracy"] for r in sel]
            sd = stdev(acc) if len(acc) > 1 else 0.0
            lines.append(
                f"| {model} | {method} | {mean(acc):.4f} ± {sd:.4f} | "
                f"{mean(_size(r) for r in sel):.4f} | {mean(r['bits_mean'] for r in sel):.2f} | "
                f"{mean(r['sparsity'] for r in sel):.3f} | "
                f"{mean(r['ebops'] for r in sel) / 1e3:.1f}k |")
    (HERE / f"results{TAG}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _plot(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, model in zip(axes, dict.fromkeys(r["model"] for r in rows)):
        for method, marker in (("fitcompress", "o"), ("uniform", "s")):
            sel = [r for r in rows if r["model"] == model and r["method"] == method]
            ax.scatter([_size(r) for r in sel], [r["test_accuracy"] for r in sel],
                       marker=marker, label=method)
        ax.set_title(f"digits {model}")
        ax.set_xlabel("weight size / float32")
        ax.set_ylabel("test accuracy")
        ax.legend()
    fig.tight_layout()
    fig.savefig(HERE / f"accuracy_vs_size{TAG}.png", dpi=120)


if __name__ == "__main__":
    main()
