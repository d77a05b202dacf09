"""Dynamic data quantization: fixed-point data formats whose split follows the data.

:class:`DynamicDataQuantizer` (``quantization=dynamic``, or ``dynamic_data_quantization=true``):
the split follows the batch's range during training (tracked as a running average) and is frozen
to that average in eval. Weights stay fixed point (:class:`~pquant.quant.range_split.
RangeSplitQuantizer` for ``per_channel``/``per_weight``). Like the range split, it chooses ``i = e`` where ``2**(e-1) <= max|x| < 2**e`` (``torch.frexp``), capped at ``b - k``;
then ``f = b - k - i``. Values therefore never overflow except by the last rounding step, which
saturates at the top code. The gradient is straight-through (identity).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from pquant.distributed import all_reduce_
from pquant.quant.granularity import Granularity
from pquant.quant.quantizer import FixedPointQuantizer
from pquant.quant.range_split import RangeSplitQuantizer, _split, _SplitBase
from pquant.quant.registry import QuantizerConfig
from pquant.quant.spec import QuantSpec

__all__ = ["DynamicConfig", "DynamicDataQuantizer", "RangeSplitQuantizer"]


@dataclass
class DynamicConfig(QuantizerConfig):
    """Dynamic data quantization (``quantization=dynamic``)."""

    name: ClassVar[str] = "dynamic"
    _target_: str = "pquant.quant.adaptive.DynamicDataQuantizer"
    momentum: float = 0.1  #: weight of the newest batch in the running max-magnitude average

    def validate(self, path: str) -> None:
        if not 0 < self.momentum <= 1:
            raise ValueError(f"{path}.momentum must be in (0, 1], got {self.momentum!r}")


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

    @classmethod
    def for_parameter(cls, config, spec: QuantSpec, shape: tuple[int, ...],
                      granularity: Granularity):
        """Weights stay fixed point."""
        return FixedPointQuantizer.for_parameter(config, spec, shape, granularity)

    @classmethod
    def for_data(cls, config, spec: QuantSpec, feature_shape=None) -> DynamicDataQuantizer:
        momentum = getattr(config, "momentum", 0.1)
        return cls(spec.k, spec.i, spec.f, spec.round_mode, spec.overflow_mode, momentum)

    def current_split(self) -> tuple[float, float]:
        i, f = _split(self.running_absmax, self._magnitude)
        return float(i), float(f)

    def frozen(self):
        i, f = self.current_split()
        return FixedPointQuantizer(self.k_value, i, f, self.round_mode, self.overflow_mode)
