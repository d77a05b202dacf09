"""Quantizers whose integer/fractional split follows the data (fixed total width, no learning).

* :class:`RangeSplitQuantizer` -- weights with ``per_channel`` or ``per_weight`` granularity:
  every group (output channel or single weight) keeps the configured total width ``b``; its
  integer bits are the fewest that hold the group's largest magnitude, the rest are fractional.
  The split is recomputed from the current weights at every forward, train or eval (weights do
  not change in eval, so eval is deterministic) -- unlike the reference, which reuses whatever the
  last training batch left behind.
* :class:`DynamicDataQuantizer` -- ``dynamic_data_quantization``: the split follows the batch's
  range during training (tracked as a running average) and is frozen to that average in eval.

Both choose ``i = e`` where ``2**(e-1) <= max|x| < 2**e`` (``torch.frexp``), capped at ``b - k``;
then ``f = b - k - i``. Values therefore never overflow except by the last rounding step, which
saturates at the top code. The gradient is straight-through (identity).
"""

from __future__ import annotations

import torch

from pquant import kernels
from pquant.distributed import all_reduce_
from pquant.quant.base import Quantizer
from pquant.quant.fixed_point import _round_inplace
from pquant.quant.granularity import Granularity
from pquant.quant.modes import OverflowMode, as_overflow_mode, as_round_mode


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
                kernels.ROUND_INDEX[self.round_mode], self.granularity is Granularity.per_channel)
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


class DynamicDataQuantizer(_SplitBase):
    """Per-tensor data quantizer whose split follows the data in training, frozen in eval.

    Args:
        k, i, f: the configured format (its width is kept; ``i`` seeds the running range).
        momentum: weight of the newest batch in the running max-magnitude average.
    """

    def __init__(self, k: int, i: int, f: int, round_mode, overflow_mode,
                 momentum: float = 0.1) -> None:
        super().__init__(k, k + max(i, -f) + f, round_mode, overflow_mode)
        self.momentum = float(momentum)
        # seeds the split at the configured integer bits until data arrives
        self.register_buffer("running_absmax", torch.tensor(2.0 ** (max(i, -f) - 1)))
        self.register_buffer("observed", torch.tensor(False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._enabled:
            return x
        if self.training:
            a = x.detach().abs().amax()
            with torch.no_grad():
                all_reduce_(a, "max")  # torchrun: the range of the global batch
                blended = torch.lerp(self.running_absmax, a, self.momentum)
                self.running_absmax.copy_(torch.where(self.observed, blended, a))
                self.observed.fill_(True)
        else:
            a = self.running_absmax
        _, f = _split(a.to(x.dtype), self._magnitude)
        return self._quantize(x, f)

    def current_split(self) -> tuple[float, float]:
        i, f = _split(self.running_absmax, self._magnitude)
        return float(i), float(f)

    def frozen(self):
        from pquant.quant.quantizer import FixedPointQuantizer

        i, f = self.current_split()
        return FixedPointQuantizer(self.k_value, i, f, self.round_mode, self.overflow_mode)
