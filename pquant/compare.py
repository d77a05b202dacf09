"""``python -m pquant.compare``: a Markdown table and an accuracy-vs-EBOPs plot of MLflow runs.

Reads the finished runs of one experiment (optionally only the children of one sweep's parent
run), groups them (by default by pruning method; repeated seeds are averaged), and writes
``comparison.md`` and ``comparison.png`` -- accuracy against EBOPs on a log axis, one colour per
pruning method, the Pareto front (most accurate for the fewest EBOPs) highlighted.

Example::

    python -m pquant.compare --experiment pquant --out outputs/compare
    python -m pquant.compare --experiment sweeps --parent <run id> --group-by pruning,quantization
    python -m pquant.compare --experiment pdp_sparsity --per-run      # one row per trial
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

METRICS = ("test/accuracy", "val/accuracy", "sparsity/global", "bits/weight/mean",
           "bits/activation/mean", "ebops/total")


@dataclass
class Row:
    """One group of runs (e.g. one pruning method over several seeds)."""

    key: tuple[str, ...]
    runs: list[dict] = field(default_factory=list)

    def values(self, metric: str) -> list[float]:
        return [r[metric] for r in self.runs if metric in r and not math.isnan(r[metric])]

    def mean(self, metric: str) -> float:
        v = self.values(metric)
        return statistics.fmean(v) if v else float("nan")

    def std(self, metric: str) -> float:
        v = self.values(metric)
        return statistics.stdev(v) if len(v) > 1 else 0.0


def load_runs(experiment: str, tracking_uri: str | None = None, parent: str | None = None
              ) -> list[dict]:
    """Finished runs as flat dicts: metrics, ``choice.*`` tags, ``seed``, ``run_id``."""
    from pquant.tracking.mlflow_tracker import default_uri
    from pquant.tracking.stale import reap_stale_runs
    from pquant.tracking.store import open_client

    client = open_client(tracking_uri or default_uri())
    reap_stale_runs(client)  # runs of processes that are gone are KILLED, not "still running"
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"no MLflow experiment named {experiment!r} at "
                         f"{tracking_uri or default_uri()}")
    query = "attributes.status = 'FINISHED'"
    if parent:
        query += f" and tags.mlflow.parentRunId = '{parent}'"
    runs = []
    token = None
    while True:
        page = client.search_runs([exp.experiment_id], filter_string=query, max_results=1000,
                                  page_token=token)
        for run in page:
            if run.data.tags.get("pquant.kind") == "sweep":
                continue
            flat = dict(run.data.metrics)
            flat.update({k: v for k, v in run.data.tags.items() if k.startswith("choice.")})
            flat["seed"] = run.data.params.get("seed", "")
            flat["run_id"] = run.info.run_id
            tags = run.data.tags
            flat["run"] = (f"{tags.get('optuna_study', 'study')} trial {tags['optuna_trial']}"
                           if "optuna_trial" in tags else run.info.run_name or run.info.run_id)
            runs.append(flat)
        token = page.token
        if not token:
            break
    return runs


def group_runs(runs: list[dict], by: list[str]) -> list[Row]:
    rows: dict[tuple[str, ...], Row] = {}
    for run in runs:
        key = tuple(str(run.get(f"choice.{b}", run.get(b, "?"))) for b in by)
        rows.setdefault(key, Row(key)).runs.append(run)
    return sorted(rows.values(), key=lambda r: r.key)


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated in (fewer EBOPs, higher accuracy)."""
    front = []
    for i, (e, a) in enumerate(points):
        dominated = any((e2 <= e and a2 >= a) and (e2 < e or a2 > a)
                        for j, (e2, a2) in enumerate(points) if j != i)
        if not dominated and not (math.isnan(e) or math.isnan(a)):
            front.append(i)
    return front


def _accuracy_metric(rows: list[Row]) -> str:
    """The quality axis (larger is better): test/val accuracy, or R^2 for regression runs."""
    for metric in ("test/accuracy", "val/accuracy", "test/r2", "val/r2"):
        if any(r.values(metric) for r in rows):
            return metric
    return "val/accuracy"


#: metrics with a bounded range (error bars are clipped to it)
BOUNDS = {"accuracy": (0.0, 1.0), "sparsity": (0.0, 1.0)}


def metric_bounds(metric: str) -> tuple[float, float]:
    """The range a metric can take (``val/accuracy`` -> [0, 1]); unbounded otherwise."""
    return BOUNDS.get(metric.rsplit("/", 1)[-1], (-math.inf, math.inf))


def clipped_error(mean: float, std: float, metric: str) -> tuple[float, float]:
    """``(below, above)`` error-bar lengths: ``std`` each way, clipped to the metric's range."""
    lo, hi = metric_bounds(metric)
    return max(0.0, min(std, mean - lo)), max(0.0, min(std, hi - mean))


def run_points(rows: list[Row], acc: str) -> list[tuple[float, float]]:
    """``(EBOPs, accuracy)`` of every run that has both."""
    return [(run["ebops/total"], run[acc]) for r in rows for run in r.runs
            if "ebops/total" in run and acc in run]


def front_runs(rows: list[Row], acc: str) -> set[int]:
    """Indices (into ``rows``) of the groups with a run on the run-level Pareto front."""
    owners = [i for i, r in enumerate(rows) for run in r.runs
              if "ebops/total" in run and acc in run]
    return {owners[j] for j in pareto(run_points(rows, acc))}


def markdown_table(rows: list[Row], by: list[str]) -> str:
    acc = _accuracy_metric(rows)
    front = front_runs(rows, acc)
    head = [*by, "runs", acc, "sparsity", "weight bits", "activation bits", "EBOPs", "Pareto"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in enumerate(rows):
        def cell(metric, fmt, r=r):
            m = r.mean(metric)
            if math.isnan(m):
                return "-"
            text = format(m, fmt)
            return text + (f" ± {format(r.std(metric), fmt)}" if len(r.values(metric)) > 1
                           else "")

        lines.append("| " + " | ".join([*r.key, str(len(r.runs)), cell(acc, ".4f"),
                                         cell("sparsity/global", ".3f"),
                                         cell("bits/weight/mean", ".2f"),
                                         cell("bits/activation/mean", ".2f"),
                                         cell("ebops/total", ".4g"),
                                         "yes" if i in front else ""]) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[Row], runs_by_row: bool, path: Path, title: str) -> dict:
    """Accuracy vs EBOPs (log), one colour per first grouping key: group means with error bars
    (std, clipped to the metric's range), the runs themselves when groups hold several, and the
    Pareto front through the runs (not the means).

    Returns:
        What was drawn: ``front`` (the front's ``(EBOPs, accuracy)`` points, by EBOPs) and
        ``bars`` (per group label: ``(mean, below, above)`` of the accuracy error bar).
    """
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = _accuracy_metric(rows)
    fig, ax = plt.subplots(figsize=(7.5, 5))
    colours = plt.get_cmap("tab10")
    labels = sorted({r.key[0] for r in rows})
    bars = {}
    for r in rows:
        colour = colours(labels.index(r.key[0]) % 10)
        if runs_by_row:
            ax.scatter([x["ebops/total"] for x in r.runs if "ebops/total" in x],
                       [x.get(acc, float("nan")) for x in r.runs if "ebops/total" in x],
                       color=colour, alpha=0.35, s=18)
        below, above = clipped_error(r.mean(acc), r.std(acc), acc)
        bars[" / ".join(r.key)] = (r.mean(acc), below, above)
        ax.errorbar(r.mean("ebops/total"), r.mean(acc), yerr=[[below], [above]], fmt="o",
                    color=colour, ms=8, capsize=3, label=" / ".join(r.key))
    points = run_points(rows, acc)
    front = sorted((points[i] for i in pareto(points)), key=lambda p: p[0])
    if front:
        ax.plot([p[0] for p in front], [p[1] for p in front], "k--", lw=1.2,
                label="Pareto front (runs)")
        ax.scatter([p[0] for p in front], [p[1] for p in front], s=160, facecolors="none",
                   edgecolors="k", linewidths=1.4)
    ax.set_xscale("log")
    ax.set_xlabel("EBOPs per sample (log)")
    ax.set_ylabel(acc)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return {"front": front, "bars": bars}


def compare(experiment: str, out: str | Path, *, tracking_uri: str | None = None,
            parent: str | None = None, group_by: str = "pruning",
            per_run: bool = False) -> tuple[Path, Path]:
    """Write ``comparison.md`` and ``comparison.png`` for an experiment; return their paths.

    ``per_run``: one row per run (for a study: per trial) instead of averaging each group.
    """
    by = [b.strip() for b in group_by.split(",") if b.strip()]
    if per_run:
        by.append("run")
    runs = load_runs(experiment, tracking_uri, parent)
    if not runs:
        raise SystemExit(f"experiment {experiment!r} has no finished runs to compare")
    rows = group_runs(runs, by)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = out / "comparison.md"
    table.write_text(f"Experiment `{experiment}`: {len(runs)} finished runs, grouped by "
                     f"{', '.join(by)} (mean ± std over the runs of a group).\n\n"
                     + markdown_table(rows, by))
    image = out / "comparison.png"
    plot(rows, any(len(r.runs) > 1 for r in rows), image, f"{experiment}: accuracy vs EBOPs")
    return table, image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pquant.compare", description=__doc__
                                     .splitlines()[0])
    parser.add_argument("--experiment", default="pquant", help="MLflow experiment name")
    parser.add_argument("--tracking-uri", default=None,
                        help="default: $MLFLOW_TRACKING_URI or sqlite:///./outputs/mlflow.db")
    parser.add_argument("--parent", default=None, help="only children of this (sweep) run id")
    parser.add_argument("--group-by", default="pruning",
                        help="comma-separated config groups, e.g. pruning,quantization")
    parser.add_argument("--per-run", action="store_true",
                        help="one row per run (per trial of a study) instead of group means")
    parser.add_argument("--out", default="outputs/compare", help="output directory")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    table, image = compare(args.experiment, args.out, tracking_uri=args.tracking_uri,
                           parent=args.parent, group_by=args.group_by, per_run=args.per_run)
    sys.stdout.write(table.read_text())
    sys.stdout.write(f"\ntable: {table}\nplot:  {image}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
