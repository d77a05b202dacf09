"""Task metrics: loss and top-1 accuracy over a loader."""

from __future__ import annotations

import torch
from torch import nn


def evaluate(model: nn.Module, loader, loss_fn: nn.Module | None = None,
             device: torch.device | str | None = None) -> dict[str, float]:
    """Mean loss and top-1 accuracy of ``model`` on ``loader`` in eval mode, without gradients.

    Args:
        model: classifier returning logits ``(B, C)``.
        loader: iterable of ``(x, y)`` with integer labels ``y`` of shape ``(B,)``.
        loss_fn: optional criterion; omitted -> no ``loss`` key.
        device: where to move batches (default: the model's first parameter's device).

    Returns:
        ``{"accuracy": a, "loss": l}`` (accuracy in [0, 1]).
    """
    if device is None:
        device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = torch.zeros((), device=device)
    loss_sum = torch.zeros((), device=device)
    n = 0
    try:
        with torch.no_grad():
            for x, y in loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                out = model(x)
                correct += (out.argmax(dim=1) == y).sum()
                if loss_fn is not None:
                    loss_sum += loss_fn(out, y) * len(y)
                n += len(y)
    finally:
        model.train(was_training)
    result = {"accuracy": float(correct) / n if n else float("nan")}
    if loss_fn is not None:
        result["loss"] = float(loss_sum) / n if n else float("nan")
    return result
