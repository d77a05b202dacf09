"""PQAvgPool1d / PQAvgPool2d: average pooling between an input and an output quantizer."""

from __future__ import annotations

import math

import torch
from torch import nn

from pquant.nn.base import PQModule
from pquant.nn.ebops import pool_cost


class _PQPoolMixin(PQModule):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq = self._quantize_in(x)
        return self._quantize_out(x, self._pool(xq))

    def export_body(self, name: str) -> list:
        """Export rule: average pooling without padding over a power-of-two window (the mean is
        then exact in float and in fixed point)."""
        from pquant.nn.export_ops import AvgPoolOp, ExportError

        kernel = tuple(self._taps())
        nd = len(kernel)
        stride = _pair(self.stride if self.stride is not None else kernel, nd)
        padding = _pair(self.padding, nd)
        taps = math.prod(kernel)
        if any(padding) or self.ceil_mode or taps & (taps - 1) or getattr(
                self, "divisor_override", None):
            raise ExportError(
                f"layer {name!r}: average pooling with kernel {kernel}, padding {padding}, "
                f"ceil_mode={self.ceil_mode} is not exported exactly; use no padding, "
                f"ceil_mode=False and a window of 2**n elements (the mean is then exact)")
        return [AvgPoolOp(nd, kernel, tuple(stride))]

    def cost(self, for_loss: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        shapes = self.sample_shapes
        if shapes is None:
            return super().cost(for_loss)
        in_shape, out_shape = shapes
        taps = math.prod(self._taps())
        ebops = pool_cost(self.input_bits(for_loss), in_shape[0], math.prod(out_shape[1:]), taps)
        return ebops, ebops


def _pair(v, n):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


class PQAvgPool1d(_PQPoolMixin, nn.AvgPool1d):
    """``nn.AvgPool1d(kernel_size, stride=None, padding=0, ceil_mode=False,
    count_include_pad=True)`` with ``input_quantizer``/``output_quantizer`` keywords."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, *, input_quantizer=None, output_quantizer=None):
        nn.AvgPool1d.__init__(self, kernel_size, stride, padding, ceil_mode, count_include_pad)
        self._init_io(input_quantizer, output_quantizer)

    def _pool(self, x):
        return nn.AvgPool1d.forward(self, x)

    def _taps(self):
        return _pair(self.kernel_size, 1)

    @classmethod
    def from_torch(cls, layer: nn.AvgPool1d, **quantizers):
        return cls(layer.kernel_size, layer.stride, layer.padding, layer.ceil_mode,
                   layer.count_include_pad, **quantizers)


class PQAvgPool2d(_PQPoolMixin, nn.AvgPool2d):
    """``nn.AvgPool2d(kernel_size, stride=None, padding=0, ceil_mode=False,
    count_include_pad=True, divisor_override=None)`` with quantizer keywords."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None, *, input_quantizer=None,
                 output_quantizer=None):
        nn.AvgPool2d.__init__(self, kernel_size, stride, padding, ceil_mode, count_include_pad,
                              divisor_override)
        self._init_io(input_quantizer, output_quantizer)

    def _pool(self, x):
        return nn.AvgPool2d.forward(self, x)

    def _taps(self):
        return _pair(self.kernel_size, 2)

    @classmethod
    def from_torch(cls, layer: nn.AvgPool2d, **quantizers):
        return cls(layer.kernel_size, layer.stride, layer.padding, layer.ceil_mode,
                   layer.count_include_pad, layer.divisor_override, **quantizers)
