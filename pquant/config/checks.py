"""Small validators that raise :class:`ConfigError` with the config path, the rule and the value."""

from __future__ import annotations

import math
from collections.abc import Iterable

from pquant.config.errors import ConfigError


def fail(path: str, rule: str, got) -> ConfigError:
    """Build the standard message: ``<path> must <rule>, got <value>``."""
    return ConfigError(f"{path} must {rule}, got {got!r}")


def check_range(path: str, value, lo=None, hi=None, lo_open=False, hi_open=False) -> None:
    """Check ``lo <= value <= hi`` (with optional open ends); NaN always fails."""
    bad = value is None or (isinstance(value, float) and math.isnan(value))
    if not bad and lo is not None:
        bad = value <= lo if lo_open else value < lo
    if not bad and hi is not None:
        bad = value >= hi if hi_open else value > hi
    if bad:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        lo_s = "-inf" if lo is None else f"{lo:g}"
        hi_s = "inf" if hi is None else f"{hi:g}"
        raise fail(path, f"be in {left}{lo_s}, {hi_s}{right}", value)


def check_choice(path: str, value, allowed: Iterable) -> None:
    allowed = list(allowed)
    if value not in allowed:
        raise fail(path, f"be one of {allowed}", value)


def check_keep_negatives(path: str, value) -> None:
    if value not in (0, 1) or isinstance(value, float) and not float(value).is_integer():
        raise fail(path, "be 0 or 1 (keep negatives: 1 = signed, 0 = clamp negatives)", value)
