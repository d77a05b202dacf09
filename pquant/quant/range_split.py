"""Weight quantizers whose integer/fractional split follows the weights (fixed total width).

:class:`RangeSplitQuantizer` -- fixed point with ``per_channel`` or ``per_weight`` granularity:
every group (output channel or single weight) keeps the configured total width ``b``; its integer
bits are the fewest that hold the group's largest magnitude, the rest are fractional. The split is
recomputed from the current weights at every forward, train or eval (weights do not change in
eval, so eval is deterministic) -- unlike the reference, which reuses whatever the last training
batch left behind.

The split is ``i = e`` where ``2**(e-1) <= max|x| < 2**e`` (``torch.frexp``), capped at ``b - k``;
then ``f = b - k - i``. Values therefore never overflow except by the last rounding step, which
saturates at the top code. The gradient is straight-through (identity). :class:`_SplitBase` is
shared with :class:`~pquant.quant.adaptive.DynamicDataQuantizer`.
"""

from __future__ import annotations

import torch

from pquant import kernels
from pquant.quant.base import Quantizer
from pquant.quant.fixed_point import _round_inplace
from pquant.quant.granularity import Granularity
from pquant.quant.modes import ROUND_INDEX, OverflowMode, as_overflow_mode, as_round_mode


def _split(absmax: torch.Tensor, magnitude_bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer and fractional bits (float tensors) for groups with the given max magnitude."""
    _, exponent = torch.frexp(absmax)
    i = exponent.clamp_(max=magnitude_bits).to(absmax.dtype)
    return i, magnitude_bits - i


class _SplitBase(Quantizer):
    def __init__(self, k: int, width: int, round_mode, overflow_mode) -> None:
        super().__init__()
        self.round_mode = as_round_mode(round_mode)
        self.overflow_mode = as_overflow_mode(overflow_mode)
        self.k_value, self.width = int(k), int(width)
        if self.k_value not in (0, 1) or self.width - self.k_value < 0 or self.width < 1:
            raise ValueError(f"invalid format: keep_negatives={k}, total width {width}")
        self.register_buffer("k", torch.tensor(float(k)))
        magnitude = self.width - self.k_value
        self._magnitude = magnitude
        top = 2.0**magnitude
        # (a 1-bit signed format saturates to -1 under SAT_SYM too, as ap_fixed does)
        symmetric = self.overflow_mode is OverflowMode.SAT_SYM and magnitude > 0
        self._code_lo = -self.k_value * (top - 1 if symmetric else top)
        self._code_hi = top - 1

    def _quantize(self, x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        y = x.clone()  # identity gradient
        codes = y.detach()
        codes.mul_(torch.exp2(f))
        _round_inplace(codes, self.round_mode)
        codes.clamp_(self._code_lo, self._code_hi).mul_(torch.exp2(-f))
        return y

    def bits(self) -> torch.Tensor:
        return torch.full((), float(self.width), device=self.k.device)

    def extra_repr(self) -> str:
        return (f"k={self.k_value}, width={self.width}, {self.round_mode.name}, "
                f"{self.overflow_mode.name}")


class RangeSplitQuantizer(_SplitBase):
    """Per-channel or per-weight formats of fixed total width for weights.

    Args:
        k: keep negatives.
        width: total bits per weight.
        granularity: ``per_channel`` (groups = output channels, dim 0) or ``per_weight``.
    """

    def __init__(self, k: int, width: int, round_mode, overflow_mode,
                 granularity: Granularity) -> None:
        super().__init__(k, width, round_mode, overflow_mode)
        if granularity is Granularity.per_tensor:
            raise ValueError("RangeSplitQuantizer is for per_channel or per_weight granularity")
        self.granularity = granularity

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(i, f)`` per group for the tensor ``x`` (shapes broadcastable to ``x``)."""
        a = x.detach().abs()
        if self.granularity is Granularity.per_channel and a.dim() > 1:
            a = a.amax(dim=tuple(range(1, a.dim())), keepdim=True)
        return _split(a, self._magnitude)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._enabled:
            return x
        spec = self.fused_spec(x)
        if spec is not None:  # (fused_spec is None whenever the kernels are off)
            return kernels.get().quantize(x, spec)
        _, f = self.split(x)
        return self._quantize(x, f)

    def fused_spec(self, like: torch.Tensor):
        if like.device.type != "cpu" or like.dtype is not torch.float32 or kernels.get() is None:
            return None
        spec = self.__dict__.get("_spec")
        if spec is None:
            spec = self.__dict__["_spec"] = kernels.get().FixedSpec.range_split(
                self._magnitude, self._code_lo, self._code_hi,
                ROUND_INDEX[self.round_mode], self.granularity is Granularity.per_channel)
        return spec

    def frozen(self) -> RangeSplitQuantizer:
        """A copy with the same settings: the split is a pure function of the input (no learned
        or running state), so the quantizer already behaves as in eval and finalisation keeps
        it. (Weight layers never reach here: finalisation bakes their quantized weights.)"""
        q = RangeSplitQuantizer(self.k_value, self.width, self.round_mode, self.overflow_mode,
                                self.granularity)
        return q.to(self.k.device)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self.granularity.name}"
