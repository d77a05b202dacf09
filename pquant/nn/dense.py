"""PQDense: a compressed ``nn.Linear``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pquant.metrics.ebops import linear_cost
from pquant.nn.weight_layer import CompressedWeightMixin


class PQDense(CompressedWeightMixin, nn.Linear):
    """``nn.Linear`` with input/weight/bias/output quantizers and a pruning method.

    Mirrors ``nn.Linear(in_features, out_features, bias=True, device=None, dtype=None)``; the
    compression parts are keyword-only and optional (all None = exactly ``nn.Linear``).

    Shapes: input ``(*, in_features)``, output ``(*, out_features)``; weight ``(out, in)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device=None,
        dtype=None,
        *,
        input_quantizer: nn.Module | None = None,
        weight_quantizer: nn.Module | None = None,
        bias_quantizer: nn.Module | None = None,
        output_quantizer: nn.Module | None = None,
        pruning: nn.Module | None = None,
        pruning_first: bool = True,
    ) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias, device, dtype)
        self._init_compression(
            input_quantizer, weight_quantizer, bias_quantizer, output_quantizer, pruning,
            pruning_first,
        )

    @classmethod
    def from_torch(cls, layer: nn.Linear, **compression) -> PQDense:
        """Wrap ``layer``: the new module takes over its Parameter objects (no copy)."""
        new = cls(layer.in_features, layer.out_features, layer.bias is not None, device="meta",
                  dtype=layer.weight.dtype, **compression)
        new.weight = layer.weight
        new.bias = layer.bias
        return new

    def _op(self, x: torch.Tensor, weight, bias) -> torch.Tensor:
        return F.linear(x, weight, bias)

    def cost(self, for_loss: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        shapes = self.sample_shapes
        if shapes is None:
            return super().cost(for_loss)
        in_shape = shapes[0]
        positions = math.prod(in_shape[:-1]) if len(in_shape) > 1 else 1
        return linear_cost(self.weight_bits(for_loss), self.input_bits(for_loss),
                           self.kept_weights(), self.bias_bits(for_loss), positions)
