"""PQBatchNorm1d / PQBatchNorm2d / PQLayerNorm.

Converting a BatchNorm keeps its affine parameters and running statistics exactly (they are the
same tensors). The scale and shift are quantized by their own quantizers; the running statistics
stay in floating point. In eval, with an output quantizer, the layer computes the exact affine map
``x * scale + shift`` (per channel, in float64, where it is exact) and rounds it once -- the
computation fixed-point hardware does, so the export reproduces it bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pquant.nn.ebops import norm_cost
from pquant.nn.weight_layer import CompressedWeightMixin

_ARGS = ("input_quantizer", "weight_quantizer", "bias_quantizer", "output_quantizer")


def _pop_quantizers(kwargs):
    return [kwargs.pop(k, None) for k in _ARGS]


class _NormCostMixin(CompressedWeightMixin):
    #: dimension of the per-sample input that per-channel bits vary along (None: trailing)
    _channel_dim: int | None = 0

    def cost(self, for_loss: bool = False):
        shapes = self.sample_shapes
        if shapes is None or self.weight is None:
            return super().cost(for_loss)
        ebops = norm_cost(self.input_bits(for_loss), self.weight_bits(for_loss),
                          self.bias_bits(for_loss), shapes[0], channel_dim=self._channel_dim)
        return ebops, ebops


class _PQBatchNormMixin(_NormCostMixin):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        xq = self._quantize_in(x)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or (self.running_mean is None
                                            and self.running_var is None)
        q_out = self.output_quantizer
        if not use_batch_stats and q_out is not None and q_out.enabled:
            # eval: the exact affine map (float64 holds x * scale + shift without rounding),
            # rounded once by the output quantizer -- what fixed-point hardware computes
            scale, shift = self.eval_affine()
            view = (-1,) + (1,) * (xq.dim() - 2)
            y = xq.double() * scale.double().view(view) + shift.double().view(view)
            return self._quantize_out(x, y).to(x.dtype)
        track = not self.training or self.track_running_stats
        weight, bias = self.effective_params()
        y = F.batch_norm(xq, self.running_mean if track else None,
                         self.running_var if track else None, weight, bias, use_batch_stats,
                         factor, self.eps)
        return self._quantize_out(x, y)

    def eval_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel ``(scale, shift)`` of the eval batch norm, ``y = x * scale + shift``:
        ``scale = weight / sqrt(running_var + eps)``, ``shift = bias - running_mean * scale``
        (float32 tensors of shape ``(C,)``, each value exactly a binary fraction)."""
        weight, bias = self.effective_params()
        scale = torch.rsqrt(self.running_var + self.eps)
        if weight is not None:
            scale = scale * weight
        shift = -self.running_mean * scale
        if bias is not None:
            shift = shift + bias
        return scale.detach(), shift.detach()

    def export_body(self, name: str) -> list:
        """Export rule: the exact per-channel affine map of the eval batch norm; it needs an
        output quantizer (a float result cannot be reproduced in fixed point)."""
        from pquant.nn.export_ops import AffineOp, ExportError, array

        q = self.output_quantizer
        if q is None or not q.enabled or self.running_mean is None:
            raise ExportError(
                f"layer {name!r}: a batch norm without running statistics or without an output "
                f"quantizer gives float results that fixed point cannot reproduce; set "
                f"quantization.quantize_output=true (or quantization.layer_specific.{name}."
                f"output.quantize=true)")
        scale, shift = self.eval_affine()
        return [AffineOp(array(scale), array(shift))]

    @classmethod
    def from_torch(cls, layer, **quantizers):
        """Wrap ``layer``: affine parameters and running statistics are the same tensors."""
        new = cls(layer.num_features, layer.eps, layer.momentum, layer.affine,
                  layer.track_running_stats, device="meta", dtype=layer.running_mean.dtype
                  if layer.running_mean is not None else None, **quantizers)
        new.weight, new.bias = layer.weight, layer.bias
        new.running_mean = layer.running_mean
        new.running_var = layer.running_var
        new.num_batches_tracked = layer.num_batches_tracked
        return new


class PQBatchNorm1d(_PQBatchNormMixin, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` with input/scale/shift/output quantizers (keyword-only)."""

    def __init__(self, *args, **kwargs) -> None:
        q_in, q_w, q_b, q_out = _pop_quantizers(kwargs)
        nn.BatchNorm1d.__init__(self, *args, **kwargs)
        self._init_compression(q_in, q_w, q_b, q_out, None)


class PQBatchNorm2d(_PQBatchNormMixin, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with input/scale/shift/output quantizers (keyword-only)."""

    def __init__(self, *args, **kwargs) -> None:
        q_in, q_w, q_b, q_out = _pop_quantizers(kwargs)
        nn.BatchNorm2d.__init__(self, *args, **kwargs)
        self._init_compression(q_in, q_w, q_b, q_out, None)


class PQLayerNorm(_NormCostMixin, nn.LayerNorm):
    """``nn.LayerNorm(normalized_shape, eps, elementwise_affine, bias)`` with quantizers."""

    _channel_dim = None

    def __init__(self, *args, **kwargs) -> None:
        q_in, q_w, q_b, q_out = _pop_quantizers(kwargs)
        nn.LayerNorm.__init__(self, *args, **kwargs)
        self._init_compression(q_in, q_w, q_b, q_out, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq = self._quantize_in(x)
        weight, bias = self.effective_params()
        y = F.layer_norm(xq, self.normalized_shape, weight, bias, self.eps)
        return self._quantize_out(x, y)

    @classmethod
    def from_torch(cls, layer: nn.LayerNorm, **quantizers):
        new = cls(layer.normalized_shape, layer.eps, layer.elementwise_affine,
                  bias=layer.bias is not None, device="meta",
                  dtype=None if layer.weight is None else layer.weight.dtype, **quantizers)
        new.weight, new.bias = layer.weight, layer.bias
        return new
