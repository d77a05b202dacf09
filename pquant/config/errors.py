"""The one exception type for bad user input (kept here for existing imports).

It lives in the leaf module :mod:`pquant.errors`; code inside pquant imports it from there.
"""

from __future__ import annotations

from pquant.errors import ConfigError

__all__ = ["ConfigError"]
