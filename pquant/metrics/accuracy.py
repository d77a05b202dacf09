"""Task metrics over a loader: loss and top-1 accuracy (classification), or MSE, MAE and R^2
(regression; floating-point targets)."""

from __future__ import annotations

import torch
from torch import nn

#: the headline metric of each task and whether larger is better
PRIMARY = {"classification": ("accuracy", True), "regression": ("mse", False)}


def evaluate(model: nn.Module, loader, loss_fn: nn.Module | None = None,
             device: torch.device | str | None = None) -> dict[str, float]:
    """Metrics of ``model`` on ``loader`` in eval mode, without gradients.

    The task follows the targets: integer labels ``(B,)`` -> classification, floating-point
    targets ``(B, T)`` (or ``(B,)``) -> regression.

    Args:
        model: returns logits ``(B, C)`` (classification) or predictions shaped like the targets.
        loader: iterable of ``(x, y)``.
        loss_fn: optional criterion; omitted -> no ``loss`` key.
        device: where to move batches (default: the model's first parameter's device).

    Returns:
        Classification: ``{"accuracy", "loss"}`` (accuracy in [0, 1]). Regression:
        ``{"mse", "mae", "r2", "loss"}`` -- mean squared and absolute error over every target
        value, and R^2 = 1 - SS_res / SS_tot per target column, averaged over the columns
        (scikit-learn's ``r2_score`` default).
    """
    if device is None:
        device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    sums: dict[str, torch.Tensor] = {}
    n = 0
    regression = False
    try:
        with torch.no_grad():
            for x, y in loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                out = model(x)
                if y.is_floating_point():
                    regression = True
                    _accumulate(sums, out.reshape(y.shape).double(), y.double())
                else:
                    correct += (out.argmax(dim=1) == y).sum()
                if loss_fn is not None:
                    loss_sum += loss_fn(out, y) * len(y)
                n += len(y)
    finally:
        model.train(was_training)
    nan = float("nan")
    if regression:
        result = _regression(sums) if n else {"mse": nan, "mae": nan, "r2": nan}
    else:
        result = {"accuracy": float(correct) / n if n else nan}
    if loss_fn is not None:
        result["loss"] = float(loss_sum) / n if n else nan
    return result


def _accumulate(sums: dict[str, torch.Tensor], pred: torch.Tensor, y: torch.Tensor) -> None:
    """Per-target-column running sums (float64) for MSE, MAE and R^2."""
    y2 = y.reshape(len(y), -1)
    err = pred.reshape(len(y), -1) - y2
    parts = {"sq": (err * err).sum(0), "abs": err.abs().sum(0), "y": y2.sum(0),
             "yy": (y2 * y2).sum(0), "n": torch.tensor(float(len(y)), dtype=torch.float64,
                                                       device=y.device)}
    for key, value in parts.items():
        sums[key] = sums[key] + value if key in sums else value


def _regression(sums: dict[str, torch.Tensor]) -> dict[str, float]:
    n = sums["n"]
    count = n * sums["sq"].numel()
    ss_tot = sums["yy"] - sums["y"] * sums["y"] / n
    r2 = 1.0 - sums["sq"] / ss_tot
    # a constant target column: R^2 is 1 for a perfect fit, else 0 (scikit-learn's convention)
    r2 = torch.where(ss_tot > 0, r2, (sums["sq"] == 0).double())
    return {"mse": float(sums["sq"].sum() / count), "mae": float(sums["abs"].sum() / count),
            "r2": float(r2.mean())}
