"""A toy quantizer kind, kept outside the package: power-of-two values (logarithmic quantization).

``test_registry.py`` copies this file and ``pot.yaml`` into a temporary project directory and
trains with ``python -m pquant quantization=pot`` there -- nothing in pquant names it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from pquant.quant.base import Quantizer
from pquant.quant.modes import OverflowMode, RoundMode
from pquant.quant.registry import QuantizerConfig


@dataclass
class PowerOfTwoConfig(QuantizerConfig):
    """Values ``+-2**e`` for ``e`` in ``[min_exponent, max_exponent]``, and zero."""

    name: ClassVar[str] = "pot"
    _target_: str = "pot_quant.PowerOfTwoQuantizer"
    min_exponent: int = -8
    max_exponent: int = 0

    def validate(self, path: str) -> None:
        if self.min_exponent > self.max_exponent:
            raise ValueError(f"{path}.min_exponent must be <= max_exponent, got "
                             f"{self.min_exponent} > {self.max_exponent}")


class PowerOfTwoQuantizer(Quantizer):
    """Rounds ``log2|x|`` to an integer in the exponent range (straight-through gradient)."""

    round_mode = RoundMode.RND
    overflow_mode = OverflowMode.SAT

    def __init__(self, min_exponent: int, max_exponent: int, signed: bool = True) -> None:
        super().__init__()
        self.lo, self.hi, self.signed = int(min_exponent), int(max_exponent), bool(signed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        with torch.no_grad():
            a = x.abs() if self.signed else x.clamp_min(0)
            e = torch.round(torch.log2(a.clamp_min(2.0 ** (self.lo - 2)))).clamp(self.lo, self.hi)
            q = torch.where(a < 2.0 ** (self.lo - 1), torch.zeros_like(a), torch.exp2(e))
            q = q * torch.sign(x) if self.signed else q
        return x + (q - x).detach()

    def bits(self) -> torch.Tensor:
        codes = self.hi - self.lo + 2  # every exponent, and zero
        return torch.tensor(float(math.ceil(math.log2(codes)) + self.signed))

    def frozen(self) -> PowerOfTwoQuantizer:
        return self

    @classmethod
    def for_parameter(cls, config, spec, shape, granularity) -> PowerOfTwoQuantizer:
        return cls(config.min_exponent, config.max_exponent, bool(spec.k))

    @classmethod
    def for_data(cls, config, spec, feature_shape=None) -> PowerOfTwoQuantizer:
        return cls(config.min_exponent, config.max_exponent, bool(spec.k))
