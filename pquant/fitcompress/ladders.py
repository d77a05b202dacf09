"""The two move ladders of the search and the size measure it steers by.

* Pruning: ``pruning_schedule`` ``(start, end, steps)`` gives ``steps`` global sparsities
  ``s_j = 1 - 10**(start + j * (end - start) / (steps - 1))`` -- a logarithmic ladder whose steps
  get finer as the sparsity approaches 1 (defaults 0, -3, 40: 0, 0.163, 0.299, ..., 0.999).
* Quantization: ``quantization_schedule`` lists weight widths in bits, strictly decreasing; a
  layer moves down the part of it below its current width, one rung per move.

Size (``compression``) is defined once, here: the bits of the kept weights of every weight layer
(dense, conv1d, conv2d) over 32 bits per weight -- the model's weights relative to float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

#: bits of a float32 weight: the reference point of the compression ratio
REFERENCE_BITS = 32.0


def pruning_ladder(start: float, end: float, steps: int) -> list[float]:
    """Global sparsities ``1 - 10**x`` for ``steps`` evenly spaced ``x`` from ``start`` to ``end``.

    Returns only the positive ones (the search starts unpruned), in increasing order.
    """
    if steps < 2:
        raise ValueError(f"pruning_schedule.steps must be >= 2, got {steps}")
    values = [1.0 - 10.0 ** (start + j * (end - start) / (steps - 1)) for j in range(steps)]
    return [v for v in values if v > 0.0]


def quantization_ladder(schedule: Sequence[float], start_bits: float) -> tuple[int, ...]:
    """The rungs of ``schedule`` below ``start_bits`` (a layer never widens), as integers."""
    return tuple(int(b) for b in schedule if b < start_bits)


def kept_bits(weight: torch.Tensor, bits: torch.Tensor | float) -> torch.Tensor:
    """Bits of the non-zero entries of ``weight`` (0-dim tensor, on the weight's device)."""
    kept = weight != 0
    if isinstance(bits, torch.Tensor) and bits.dim() > 0:
        return (kept * bits).sum(dtype=torch.float32)
    return kept.sum(dtype=torch.float32) * float(bits)


def compression_ratio(size_bits: float, num_weights: int) -> float:
    """Size of the weights relative to float32: ``size_bits / (32 * num_weights)``."""
    return size_bits / (REFERENCE_BITS * num_weights) if num_weights else 1.0


def weight_compression(model: torch.nn.Module) -> float:
    """``compression_ratio`` of a model's weight layers as its forward uses them."""
    from pquant.metrics.layers import weight_layers

    size = 0.0
    count = 0
    for view in weight_layers(model):
        size += float(kept_bits(view.weight, view.weight_bits))
        count += view.weight.numel()
    return compression_ratio(size, count)
