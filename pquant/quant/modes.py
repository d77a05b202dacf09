"""Rounding and overflow modes of fixed-point formats (names as in Vivado/Vitis HLS ``ap_fixed``)."""

from __future__ import annotations

from enum import Enum


class RoundMode(Enum):
    """How a value between two grid points is mapped onto the grid.

    ``R`` acts on the value measured in LSBs, ``z = x * 2**f``.
    """

    TRN = "TRN"  #: floor(z): truncate toward -inf (the cheapest in hardware)
    RND = "RND"  #: floor(z + 1/2): nearest, ties toward +inf
    RND_CONV = "RND_CONV"  #: nearest, ties to even (convergent rounding)
    TRN_ZERO = "TRN_ZERO"  #: truncate toward zero
    RND_ZERO = "RND_ZERO"  #: nearest, ties toward zero
    RND_MIN_INF = "RND_MIN_INF"  #: nearest, ties toward -inf
    RND_INF = "RND_INF"  #: nearest, ties away from zero


#: index of each rounding mode in the fused kernels' C++ enum (``pquant/kernels/pquant_kernels.cpp``
#: lists them in the order of :class:`RoundMode`: keep the two in step)
ROUND_INDEX = {mode: index for index, mode in enumerate(RoundMode)}


class OverflowMode(Enum):
    """What happens to a value outside the representable range."""

    SAT = "SAT"  #: clip to [-k 2^i, 2^i - 2^-f]
    SAT_SYM = "SAT_SYM"  #: clip to the symmetric range [-k (2^i - 2^-f), 2^i - 2^-f]
    WRAP = "WRAP"  #: two's-complement wrap of the rounded code (in eval; identity in training)
    #: ap_fixed's AP_WRAP_SM (signed formats only): the two's-complement wrap, with the bits of
    #: an overflowed code inverted where its sign differs from bit W of the unrounded code
    WRAP_SM = "WRAP_SM"

    @property
    def saturating(self) -> bool:
        return self in (OverflowMode.SAT, OverflowMode.SAT_SYM)


def as_round_mode(value: RoundMode | str) -> RoundMode:
    """Accept an enum member or its name; raise ``ValueError`` listing the allowed names."""
    return _as_enum(RoundMode, value, "round_mode")


def as_overflow_mode(value: OverflowMode | str) -> OverflowMode:
    """Accept an enum member or its name; raise ``ValueError`` listing the allowed names."""
    return _as_enum(OverflowMode, value, "overflow_mode")


def _as_enum(enum_type, value, what: str):
    if isinstance(value, enum_type):
        return value
    name = getattr(value, "name", value)
    try:
        return enum_type[str(name)]
    except KeyError:
        allowed = ", ".join(m.name for m in enum_type)
        raise ValueError(f"{what} must be one of [{allowed}], got {value!r}") from None
