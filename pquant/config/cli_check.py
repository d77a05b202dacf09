"""Friendlier messages for overrides that name a key the config does not have.

Hydra reports an unknown key as ``Could not override 'pruning.spars' ... Key 'spars' not in
'PDPConfig'`` and suggests ``+pruning.spars=...`` (which the schema would reject anyway). Before
Hydra runs, ``python -m pquant`` composes the plain overrides once and, if a key is unknown,
explains it with the list of keys that section does have.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf

_NOT_IN = re.compile(r"Could not override '([^']+)'")
_FLAGS_WITH_VALUE = {"--config-name", "-cn", "--config-path", "-cp", "--config-dir", "-cd",
                     "--experimental-rerun", "--info", "-i", "--package", "-p"}


def plain_overrides(argv: Sequence[str]) -> list[str] | None:
    """The overrides of a single run, or None when the command is not a plain single run."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("-m", "--multirun", "--help", "-h", "--hydra-help", "--cfg", "-c",
                   "--resolve", "--shell-completion", "-sc"):
            return None
        if arg in _FLAGS_WITH_VALUE:
            skip = True
            continue
        if arg.startswith("-"):
            return None
        out.append(arg)
    return out


def composition_error_message(overrides: Sequence[str]) -> str | None:
    """One line explaining why the overrides do not compose, or None if they do."""
    from pquant.config.compose import load_config

    try:
        load_config(overrides)
        return None
    except Exception as exc:  # noqa: BLE001 - every composition failure is reported as one line
        unknown = unknown_key_message(overrides) if _NOT_IN.search(str(exc)) else None
        return unknown or one_line(exc)


_INVALID = re.compile(r"Invalid value '(.*)', expected one of (\[.*\])")
_CONVERT = re.compile(r"Value '(.*)' of type '\w+' could not be converted to (\w+)")
_MISSING = re.compile(r"Could not find '([^'/]+)/([^']+)'")


def one_line(exc: BaseException) -> str:
    """A composition error (Hydra/OmegaConf) as one line: the setting, what is allowed, what was
    given."""
    cause = exc.__cause__
    key = getattr(cause, "full_key", None)
    if key:
        msg = str(getattr(cause, "msg", cause)).splitlines()[0]
        if match := _INVALID.search(msg):
            return f"{key} must be one of {match.group(2)}, got '{match.group(1)}'"
        if match := _CONVERT.search(msg):
            return f"{key} must be of type {match.group(2)}, got '{match.group(1)}'"
        return f"{key}: {msg}"
    text = str(exc)
    if match := _MISSING.search(text):
        group, name = match.groups()
        options = re.findall(r"^\t(\S+)$", text.split("Config search path")[0], re.M)
        return f"{group} must be one of [{', '.join(options)}], got '{name}'"
    lines = [line.strip() for line in text.split("Config search path")[0].splitlines()]
    return " ".join(line for line in lines if line)


def unknown_key_message(overrides: Sequence[str]) -> str | None:
    """A one-paragraph explanation if an override names an unknown key, else None."""
    from pquant.config.compose import load_config

    try:
        load_config(overrides)
        return None
    except ConfigCompositionException as exc:
        match = _NOT_IN.search(str(exc))
        if not match:
            return None
        path = match.group(1)
    parent_path, _, key = path.rpartition(".")
    given = next((o.split("=", 1)[1] for o in overrides
                  if o.split("=", 1)[0].lstrip("+~") == path), "?")
    try:
        rest = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != path]
        cfg = load_config(rest)
    except Exception:  # noqa: BLE001 - another override is broken too; let Hydra report it
        return None
    node = OmegaConf.select(cfg, parent_path) if parent_path else cfg
    if not isinstance(node, DictConfig):
        return None
    keys = sorted(str(k) for k in node.keys())
    close = [k for k in keys if k.startswith(key[:3])] if key else []
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    where = parent_path or "the top level"
    return (f"{path} is not a setting: {where} has no key '{key}'{hint}. Allowed keys of "
            f"{where}: {', '.join(keys)}. Got {path}={given}.")
