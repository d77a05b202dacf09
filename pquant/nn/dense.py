"""PQDense: a compressed ``nn.Linear``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pquant import kernels
from pquant.metrics.ebops import linear_cost
from pquant.nn.weight_layer import CompressedWeightMixin
from pquant.quant.base import Quantizer

_F32 = torch.float32


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ext = kernels.get()
        if ext is not None and x.dtype is _F32 and x.dim() == 2 and not x.is_cuda:
            y = self._fused_forward(ext, x)
            if y is not None:
                return y
        return CompressedWeightMixin.forward(self, x)

    # ------------------------------------------------------------------ fused CPU path
    def _fused_specs(self, x: torch.Tensor):
        """Specs of the four quantizers for the fused kernel (None entries: identity), or None
        when one of them cannot be fused. Cached until a format, a train/eval flag or one of the
        quantizer modules changes."""
        m = self._modules
        quantizers = (m["input_quantizer"], m["weight_quantizer"], m["bias_quantizer"],
                      m["output_quantizer"])
        key = (Quantizer.format_epoch, Quantizer.mode_epoch, *quantizers)
        d = self.__dict__
        if d.get("_fused_key") == key:
            return d["_fused_value"]
        likes = (x, self.weight, self.bias, x)
        specs = []
        for q, like in zip(quantizers, likes):
            if q is None or not q.enabled or q.bypass or like is None:
                specs.append(None)
                continue
            spec = q.fused_spec(like)
            if spec is None or (like is x and spec.per_element_format):
                specs = None
                break
            specs.append(spec)
        d["_fused_key"], d["_fused_value"] = key, specs
        return specs

    def _fused_forward(self, ext, x: torch.Tensor) -> torch.Tensor | None:
        """The whole layer as one autograd node (same values and gradients as the generic path);
        None when it does not apply (no graph needed -- eval uses the cache --, finalized,
        quantize-then-prune order, a format the kernels do not implement)."""
        # (parameters and sub-modules read from their dicts: this runs once per layer and step)
        params = self._parameters
        weight, bias = params["weight"], params["bias"]
        if (self.finalized or not self.pruning_first or weight.dtype is not _F32
                or weight.is_cuda):
            return None
        if not (torch.is_grad_enabled() and weight.requires_grad) and not self._needs_graph():
            return None
        specs = self._fused_specs(x)
        if specs is None:
            return None
        mask = soft = None
        prune = self._modules["pruning"]
        if prune is not None:
            weight, mask, soft = prune.fused_weight(weight)
            if bias is not None and prune.masks_bias:
                bias = prune.prune_bias(bias)
        y = ext.dense(x, weight, bias, mask, *specs, soft)
        d = self.__dict__
        d["_shapes"] = (x.shape, y.shape)
        d["_last_weight"] = None
        return y

    def cost(self, for_loss: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        shapes = self.sample_shapes
        if shapes is None:
            return super().cost(for_loss)
        in_shape = shapes[0]
        positions = math.prod(in_shape[:-1]) if len(in_shape) > 1 else 1
        return linear_cost(self.weight_bits(for_loss), self.input_bits(for_loss),
                           self.kept_weights(), self.bias_bits(for_loss), positions,
                           bops=not isinstance(for_loss, dict))  # the loss needs EBOPs only
