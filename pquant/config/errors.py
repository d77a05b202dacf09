"""The one exception type for bad user input."""

from __future__ import annotations

from hydra.errors import CompactHydraException


class ConfigError(CompactHydraException, ValueError):
    """A setting is invalid. The message names the config path, what is allowed and what was given.

    Subclasses Hydra's ``CompactHydraException`` so the command line prints only the message (no
    traceback unless ``HYDRA_FULL_ERROR=1``), and ``ValueError`` for library users.
    """
