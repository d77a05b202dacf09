"""The one exception type for bad user input, and the small validators that raise it.

A leaf module: it imports nothing from pquant, so every package (quant, pruning, data, models,
nn, training, tracking, ...) can use it without depending on :mod:`pquant.config`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from hydra.errors import CompactHydraException


class ConfigError(CompactHydraException, ValueError):
    """A setting is invalid. The message names the config path, what is allowed and what was given.

    Subclasses Hydra's ``CompactHydraException`` so the command line prints only the message (no
    traceback unless ``HYDRA_FULL_ERROR=1``), and ``ValueError`` for library users.
    """


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
    """Check that ``value`` is one of ``allowed``."""
    allowed = list(allowed)
    if value not in allowed:
        raise fail(path, f"be one of {allowed}", value)


def check_keep_negatives(path: str, value) -> None:
    """Check a keep-negatives flag: 0 or 1."""
    if value not in (0, 1) or isinstance(value, float) and not float(value).is_integer():
        raise fail(path, "be 0 or 1 (keep negatives: 1 = signed, 0 = clamp negatives)", value)
