"""Shapes of learnable pruning thresholds (DST, AutoSparse) and the global magnitude budget."""

from __future__ import annotations

from enum import Enum

import numpy as np
import torch


class ThresholdType(Enum):
    """How thresholds are shared over a weight viewed as ``(out, rest)``."""

    layerwise = "layerwise"  #: one threshold for the layer
    channelwise = "channelwise"  #: one per output unit / filter
    weightwise = "weightwise"  #: one per weight

    def shape(self, weight_shape: torch.Size) -> tuple[int, int]:
        out = weight_shape[0]
        rest = int(np.prod(weight_shape[1:])) if len(weight_shape) > 1 else 1
        if self is ThresholdType.layerwise:
            return (1, 1)
        if self is ThresholdType.channelwise:
            return (out, 1)
        return (out, rest)


def global_magnitude_budget(weights: list[torch.Tensor], sparsity: float) -> list[float]:
    """Per-layer sparsities that together remove the smallest-magnitude ``sparsity`` of all
    weights (one global threshold over the layers given -- layers excluded from pruning are not
    passed, so they cannot consume the budget).

    Returns:
        For each weight, the fraction of its entries below the global threshold.
    """
    if not weights or sparsity <= 0:
        return [0.0 for _ in weights]
    magnitudes = [w.detach().abs().reshape(-1).float().cpu().numpy() for w in weights]
    flat = np.sort(np.concatenate(magnitudes))
    n_prune = min(int(round(sparsity * flat.size)), flat.size - 1)
    threshold = 0.5 * (flat[n_prune - 1] + flat[n_prune]) if n_prune > 0 else -1.0
    return [float(np.count_nonzero(m < threshold)) / m.size for m in magnitudes]


#: a layer losing more than this share to a global budget is reported
NEARLY_EMPTY = 0.97


def budget_warnings(names: list[str], ratios: list[float], sparsity: float, setting: str
                    ) -> list[str]:
    """Warn when a global budget nearly empties a layer (typically one whose scale a following
    BatchNorm undoes, so its magnitudes say nothing)."""
    bad = [f"{n} {r:.3f}" for n, r in zip(names, ratios) if r > max(NEARLY_EMPTY, sparsity)]
    if not bad:
        return []
    return [f"the global magnitude budget ({setting}) removes almost every weight of "
            f"{', '.join(bad)} (overall target {sparsity:.3f}); magnitudes are not comparable "
            f"across layers when a normalisation rescales them -- set {setting}=false for a "
            f"per-layer target"]
