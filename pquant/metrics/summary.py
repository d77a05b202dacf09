"""The human summary printed at the end of a run (a pure function of the report)."""

from __future__ import annotations


def _fmt_count(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e4:
        return f"{value / 1e3:.1f}k"
    return f"{value:.0f}"


def _cell(report: dict, key: str, fmt: str, width: int) -> str:
    """A figure of the per-layer table, or ``-`` where the layer has none (no weights)."""
    return f"{report[key]:>{width}{fmt}}" if key in report else f"{'-':>{width}}"


def format_summary(report: dict, title: str, layers: list[str], footer: list[str]) -> str:
    """A short table: accuracy (or MSE, MAE, R^2 for regression), sparsity, bits, EBOPs,
    parameters, then one row per layer (``-`` for figures a layer does not have)."""
    r = report
    lines = [f"pquant summary -- {title}"]
    nan = float("nan")
    if "test/mse" in r or "val/mse" in r:  # regression
        for key in ("mse", "mae", "r2"):
            lines.append(f"  {key:<12} test {r.get(f'test/{key}', nan):.4f}"
                         f"   val {r.get(f'val/{key}', nan):.4f}")
    else:
        acc = f"  accuracy     test {r.get('test/accuracy', nan):.4f}"
        acc += f"   val {r.get('val/accuracy', nan):.4f}"
        lines.append(acc)
    target = r.get("target/sparsity")
    sp = f"  sparsity     {r['sparsity/global']:.4f} global"
    if target is not None:
        sp += f"   (target {target:.4f})"
    lines.append(sp)
    lines.append(f"  bits         weights {r['bits/weight/mean']:.2f} (mean over kept)   "
                 f"activations {r['bits/activation/mean']:.2f} (mean at layer inputs)")
    lines.append(f"  cost         EBOPs {_fmt_count(r['ebops/total'])}   "
                 f"BOPs {_fmt_count(r['bops/total'])}   size {r['size/bits'] / 8192:.2f} KiB")
    lines.append(f"  parameters   {int(r['params/total'])} total, "
                 f"{int(r['params/nonzero'])} non-zero")
    if layers:
        width = max(12, max(len(n) for n in layers) + 2)
        lines.append(f"  {'layer':<{width}}{'sparsity':>10}{'w bits':>9}{'in bits':>9}"
                     f"{'EBOPs':>11}{'params':>9}")
        for name in layers:
            lines.append(
                f"  {name:<{width}}{_cell(r, f'sparsity/{name}', '.4f', 10)}"
                f"{_cell(r, f'bits/weight/{name}', '.2f', 9)}"
                f"{_cell(r, f'bits/input/{name}', '.2f', 9)}"
                f"{_fmt_count(r.get(f'ebops/{name}', 0.0)):>11}"
                f"{int(r.get(f'params/{name}/nonzero', 0)):>9}"
            )
    lines.extend(f"  {line}" for line in footer)
    return "\n".join(lines)
