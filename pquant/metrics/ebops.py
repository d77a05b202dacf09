"""BOPs and EBOPs -- the one implementation (the HGQ loss and the report both call it).

For a layer with ``P`` output positions per sample (1 for a dense layer on a flat input):

* ``BOPs  = P * sum_{o,j} b_in[j] * b_w[o,j]            + P * O * mean(b_bias)``
* ``EBOPs = P * sum_{o,j} b_in[j] * b_w[o,j] * kept[o,j] + P * O * mean(b_bias)``

i.e. every multiply-accumulate costs the product of its operand widths, a pruned (or zero)
weight costs nothing in EBOPs, and the bias is added once per output. Float tensors count as
32 bits. Costs are per sample (batch 1).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pquant.metrics.layers import WeightLayerView


def linear_cost(
    weight_bits: torch.Tensor,
    input_bits: torch.Tensor,
    kept: torch.Tensor,
    bias_bits: torch.Tensor | None,
    positions: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(BOPs, EBOPs) of ``y = W x + b`` applied at ``positions`` positions.

    Args:
        weight_bits: ``(O, I)`` or broadcastable; bits per weight.
        input_bits: scalar or ``(I,)``; bits per input feature.
        kept: ``(O, I)`` float/bool, 1 where the weight is non-zero.
        bias_bits: scalar or ``(O,)`` bits per bias element, or None.
        positions: number of output positions per sample.

    Returns:
        Two scalar tensors, differentiable w.r.t. the bit tensors.
    """
    mac_bits = weight_bits * input_bits
    mac_bits = mac_bits.expand(kept.shape) if mac_bits.dim() else mac_bits * torch.ones_like(kept)
    out_features = kept.shape[0]
    bias = 0.0
    if bias_bits is not None:
        bias = positions * out_features * bias_bits.float().mean()
    bops = positions * mac_bits.sum() + bias
    ebops = positions * (mac_bits * kept).sum() + bias
    return bops, ebops


def layer_cost(view: WeightLayerView, input_shape: tuple[int, ...]) -> tuple[float, float]:
    """(BOPs, EBOPs) of one weight layer for a per-sample input of ``input_shape``."""
    module = view.module
    kept = (view.weight != 0).to(view.weight.dtype)
    if isinstance(module, nn.Linear):
        positions = math.prod(input_shape[:-1]) if len(input_shape) > 1 else 1
        bops, ebops = linear_cost(view.weight_bits, view.input_bits, kept, view.bias_bits,
                                  positions)
        return float(bops), float(ebops)
    raise TypeError(f"no cost model for layer type {type(module).__name__} ({view.name})")
