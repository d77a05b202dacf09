"""Exact fixed-point formats for values and for the results of exact arithmetic."""

from __future__ import annotations

import math

import numpy as np


def frac_bits(values: np.ndarray) -> int:
    """Fewest fractional bits ``f`` with every ``v * 2**f`` an integer (``-64`` for all-zero)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[v != 0]
    if v.size == 0:
        return -64
    mant, exp = np.frexp(np.abs(v))  # v = mant * 2**exp, mant in [0.5, 1)
    m = np.round(mant * 2.0**53).astype(np.int64)  # float64 mantissa as an integer
    trailing = np.array([(int(x) & -int(x)).bit_length() - 1 for x in m])
    return int(np.max(53 - exp - trailing))


def signed_bits(lo: float, hi: float) -> int:
    """Fewest bits of a signed integer holding ``[lo, hi]`` (integers)."""
    top = max(abs(int(lo)) - 1 if lo < 0 else 0, int(hi), 0)
    return top.bit_length() + 1


def exact_channel_format(w2: np.ndarray) -> tuple[np.ndarray, int]:
    """Per-row fractional bits and one signed bit-width holding every row of ``w2`` exactly.

    Args:
        w2: ``(channels, n)`` values.

    Returns:
        ``(f, bits)``: ``f`` of shape ``(channels,)`` and the common signed width.
    """
    f = np.array([max(frac_bits(row), -32) for row in w2], dtype=np.float64)
    codes = w2.astype(np.float64) * np.exp2(f)[:, None]
    bits = signed_bits(float(codes.min(initial=0.0)), float(codes.max(initial=0.0)))
    return f, max(bits, 2)


def fixed_type(lo: float, hi: float, f: int) -> tuple[int, int, bool]:
    """``(width, integer bits incl. sign, signed)`` of an ap_fixed type holding every multiple of
    ``2**-f`` in ``[lo, hi]``."""
    signed = lo < 0
    mag = max(abs(lo), abs(hi), 2.0**-f)
    integer = max(math.floor(math.log2(mag)) + 1, -f + 1)  # 2**(integer-1) <= mag < 2**integer
    if signed:
        integer += 1
    width = integer + f
    return max(width, 1), integer, signed
