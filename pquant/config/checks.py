"""Small validators raising :class:`ConfigError` (kept here for existing imports).

They live in the leaf module :mod:`pquant.errors`; code inside pquant imports them from there.
"""

from __future__ import annotations

from pquant.errors import check_choice, check_keep_negatives, check_range, fail

__all__ = ["check_choice", "check_keep_negatives", "check_range", "fail"]
