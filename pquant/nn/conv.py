"""PQConv1d / PQConv2d: compressed ``nn.Conv1d`` / ``nn.Conv2d``."""

from __future__ import annotations

import math

import torch
from torch import nn

from pquant.nn.ebops import conv_cost
from pquant.nn.weight_layer import CompressedWeightMixin


class _PQConvMixin(CompressedWeightMixin):
    """Forward and cost shared by the convolutions (``_conv_forward`` comes from torch)."""

    def _op(self, x: torch.Tensor, weight, bias) -> torch.Tensor:
        return self._conv_forward(x, weight, bias)

    def cost(self, for_loss: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        shapes = self.sample_shapes
        if shapes is None:
            return super().cost(for_loss)
        out_positions = math.prod(shapes[1][1:])  # every output position of every channel
        return conv_cost(self.weight_bits(for_loss), self.input_bits(for_loss),
                         self.kept_weights(), self.bias_bits(for_loss), out_positions,
                         self.groups, bops=not isinstance(for_loss, dict))  # loss: EBOPs only

    def export_body(self, name: str) -> list:
        """Export rule: one convolution (zero padding only) with the baked weight and bias."""
        from pquant.nn.export_ops import ConvOp, ExportError, array

        if self.padding_mode != "zeros" or isinstance(self.padding, str):
            raise ExportError(f"layer {name!r}: padding={self.padding!r}, padding_mode="
                              f"{self.padding_mode!r} is not exported; use integer zero padding")
        return [ConvOp(len(self.kernel_size), array(self.weight), array(self.bias),
                       tuple(self.stride), tuple(self.padding), tuple(self.dilation),
                       self.groups)]

    @classmethod
    def from_torch(cls, layer, **compression):
        """Wrap ``layer`` (all hyper-parameters kept); it takes over the Parameter objects."""
        new = cls(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                  layer.padding, layer.dilation, layer.groups, layer.bias is not None,
                  layer.padding_mode, device="meta", dtype=layer.weight.dtype, **compression)
        new.weight = layer.weight
        new.bias = layer.bias
        return new


def _conv_init(self, torch_cls, args, kwargs, compression) -> None:
    torch_cls.__init__(self, *args, **kwargs)
    self._init_compression(
        compression.pop("input_quantizer", None), compression.pop("weight_quantizer", None),
        compression.pop("bias_quantizer", None), compression.pop("output_quantizer", None),
        compression.pop("pruning", None), compression.pop("pruning_first", True))
    if compression:
        raise TypeError(f"unexpected arguments {sorted(compression)}")


_COMPRESSION_ARGS = ("input_quantizer", "weight_quantizer", "bias_quantizer", "output_quantizer",
                     "pruning", "pruning_first")


class PQConv1d(_PQConvMixin, nn.Conv1d):
    """``nn.Conv1d`` with quantizers and pruning. Mirrors the torch constructor; compression
    parts are keyword-only (``input_quantizer``, ``weight_quantizer``, ``bias_quantizer``,
    ``output_quantizer``, ``pruning``, ``pruning_first``). Input ``(B, C, L)``."""

    def __init__(self, *args, **kwargs) -> None:
        compression = {k: kwargs.pop(k) for k in _COMPRESSION_ARGS if k in kwargs}
        _conv_init(self, nn.Conv1d, args, kwargs, compression)


class PQConv2d(_PQConvMixin, nn.Conv2d):
    """``nn.Conv2d`` with quantizers and pruning (see :class:`PQConv1d`). Input
    ``(B, C, H, W)``."""

    def __init__(self, *args, **kwargs) -> None:
        compression = {k: kwargs.pop(k) for k in _COMPRESSION_ARGS if k in kwargs}
        _conv_init(self, nn.Conv2d, args, kwargs, compression)
