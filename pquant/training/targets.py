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
    """One message per layer whose mask sparsity misses its method's target by > tolerance."""
    messages = []
    with torch.no_grad():
        for name, layer in model.named_modules():
            if not isinstance(layer, CompressedWeightMixin) or layer.pruning is None:
                continue
            target = layer.pruning.target_sparsity()
            if target is None:
                continue
            got = achieved_sparsity(layer)
            if abs(got - target) > tolerance:
                messages.append(
                    f"layer '{name}' reached sparsity {got:.3f} but "
                    f"{type(layer.pruning).__name__} was asked for {target:.3f} "
                    f"(tolerance {tolerance}); see the schedule warning above or raise "
                    f"training.epochs"
                )
    return messages
