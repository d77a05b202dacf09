"""Did every pruned layer reach the sparsity its method was asked for?"""

from __future__ import annotations

import torch
from torch import nn

from pquant.nn.weight_layer import CompressedWeightMixin

TOLERANCE = 0.01


def achieved_sparsity(layer: CompressedWeightMixin) -> float:
    """Fraction of weights removed by the layer's hard mask."""
    mask = layer.hard_mask()
    return 1.0 - float(mask.float().mean())


def check_targets(model: nn.Module, tolerance: float = TOLERANCE) -> list[str]:
    """A message (at most one) naming every layer whose mask misses its target by > tolerance."""
    misses = []
    targets = set()
    with torch.no_grad():
        for name, layer in model.named_modules():
            if not isinstance(layer, CompressedWeightMixin) or layer.pruning is None:
                continue
            target = layer.pruning.target_sparsity()
            if target is None:
                continue
            got = achieved_sparsity(layer)
            if abs(got - target) > tolerance:
                misses.append(f"{name} {got:.3f}")
                targets.add(f"{target:.3f}")
    if not misses:
        return []
    return [
        f"pruning did not reach its target: reached sparsity {', '.join(misses)} but was asked "
        f"for {' / '.join(sorted(targets))} (tolerance {tolerance}); lengthen the schedule "
        f"(see the warning before training) or lower the target"
    ]
