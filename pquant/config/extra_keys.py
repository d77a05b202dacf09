"""Keys the schemas do not have.

Hydra's ``+key=value`` adds a key to any node, and OmegaConf drops keys a dataclass does not
have when it builds the object, so a typo would be silently ignored. The rules:

* an unknown top-level key is an error (the top level holds the config groups and run-wide
  settings only);
* an extra key in one of the five sections is an error when it is a near miss of a real field
  (``training.fine_tunning_epochs``: did you mean ``fine_tuning_epochs``?) and a warning
  otherwise -- extra keys stay allowed as values for interpolation, as the reference documents.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import fields

from omegaconf import DictConfig

from pquant.errors import ConfigError

log = logging.getLogger(__name__)

#: how similar a key must be to a field to count as a typo of it (difflib ratio)
NEAR_MISS = 0.8

_warned: set[str] = set()


def _field_names(schema) -> list[str]:
    return [f.name for f in fields(schema)]


def _given(node: DictConfig, key: str) -> str:
    try:
        value = node._get_node(key)._value()  # unresolved: ${...} stays as written
    except Exception:  # noqa: BLE001 - only for the message
        value = "?"
    return str(value)


def near_misses(key: str, allowed: list[str]) -> list[str]:
    """Fields that ``key`` is probably a typo of (best first)."""
    lowered = {a.lower(): a for a in allowed}
    hits = difflib.get_close_matches(key.lower(), list(lowered), n=3, cutoff=NEAR_MISS)
    return [lowered[h] for h in hits]


def check_top_level(cfg: DictConfig, schema) -> None:
    """Raise :class:`ConfigError` for a top-level key that is neither a field of ``schema``
    (the primary config) nor ``hydra``."""
    allowed = _field_names(schema)
    for key in cfg.keys():
        key = str(key)
        if key in allowed or key == "hydra":
            continue
        close = near_misses(key, allowed)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(
            f"{key} is not a setting: the top level has no key '{key}'{hint}. Allowed top-level "
            f"keys: {', '.join(sorted(allowed))}. Got {key}={_given(cfg, key)}.")


def check_section_keys(path: str, node, schema) -> None:
    """Extra keys of one section: a near miss of a field is an error, others a warning."""
    if not isinstance(node, DictConfig):
        return
    allowed = _field_names(schema)
    for key in node.keys():
        key = str(key)
        if key in allowed:
            continue
        close = near_misses(key, allowed)
        if close:
            raise ConfigError(
                f"{path}.{key} is not a setting (did you mean {close[0]}?): {path} has no key "
                f"'{key}'. Allowed keys of {path}: {', '.join(sorted(allowed))}. Got "
                f"{path}.{key}={_given(node, key)}.")
        if f"{path}.{key}" not in _warned:
            _warned.add(f"{path}.{key}")
            log.warning("%s.%s is not a setting pquant reads (kept, e.g. for interpolation); "
                        "settings of %s: %s", path, key, path, ", ".join(sorted(allowed)))
