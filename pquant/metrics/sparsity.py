"""Sparsity counted on the weights the forward actually uses."""

from __future__ import annotations

import torch
from torch import nn

from pquant.metrics.layers import WeightLayerView, weight_layers


def sparsity_metrics(model: nn.Module, views: list[WeightLayerView] | None = None
                     ) -> dict[str, float]:
    """Fraction of zero weights, per weight layer and over all weight layers.

    Counted on the effective weights (after pruning *and* quantization: a weight rounded to zero
    costs nothing in hardware and counts as pruned). Biases are not counted.

    Args:
        model: the model.
        views: its weight layers, if the caller has them already.

    Returns:
        ``{"sparsity/global": s, "sparsity/<layer>": s_layer, ...}`` with values in [0, 1].
    """
    out: dict[str, float] = {}
    zeros = total = 0
    for view in weight_layers(model) if views is None else views:
        z = int(torch.count_nonzero(view.weight == 0))
        n = view.weight.numel()
        out[f"sparsity/{view.name}"] = z / n if n else 0.0
        zeros += z
        total += n
    out["sparsity/global"] = zeros / total if total else 0.0
    return out
