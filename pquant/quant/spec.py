"""A fixed-point format plus its modes (plain data, no torch state)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from pquant.quant.fixed_point import bit_width, check_wrap_sm_signed
from pquant.quant.modes import OverflowMode, RoundMode, as_round_mode


@dataclass
class QuantSpec:
    """A fixed-point format plus its modes: what a layer needs to build one quantizer.

    Attributes:
        k: keep negatives (0 or 1).
        i: integer bits without the sign bit.
        f: fractional bits.
        round_mode: rounding mode name or enum.
        overflow_mode: overflow mode name or enum.
    """

    k: int
    i: int
    f: int
    round_mode: RoundMode | str = RoundMode.RND
    overflow_mode: OverflowMode | str = OverflowMode.SAT

    @property
    def bits(self) -> int:
        return int(bit_width(self.k, self.i, self.f))

    def check(self, where: str = "quantizer") -> None:
        """Raise ``ValueError`` naming ``where`` if the format is not a usable fixed-point format."""
        if self.k not in (0, 1):
            raise ValueError(f"{where}: keep_negatives must be 0 or 1, got {self.k!r}")
        if self.k + self.i + self.f < 1:
            raise ValueError(
                f"{where}: total width k + i + f must be at least 1 bit, got "
                f"k={self.k}, i={self.i}, f={self.f} ({self.k + self.i + self.f} bits)"
            )
        as_round_mode(self.round_mode)
        check_wrap_sm_signed(self.k, self.overflow_mode, where)

    def with_(self, **changes) -> QuantSpec:
        """A copy with some fields replaced."""
        return replace(self, **changes)
