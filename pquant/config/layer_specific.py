"""``quantization.layer_specific``: per-layer formats, keyed by dotted module names or globs.

Shape of one entry (every key optional)::

    fc1:                      # a name as in model.named_modules(), or a glob such as "encoder.*"
      quantizer: hgq          # the quantizer kind of all its roles (a name, or {_target_: ...})
      weight: {keep_negatives: 1, integer_bits: 0, fractional_bits: 5, round_mode: RND,
               overflow_mode: SAT, granularity: per_channel, quantizer: fixed}
      bias:   {...same keys...}
      input:  {quantize: true, keep_negatives: 1, integer_bits: 3, fractional_bits: 4,
               round_mode: RND, overflow_mode: SAT, quantizer: ...}
      output: {...same keys as input...}

Entries apply in the order given, exact names after globs. A key that matches no converted layer
is an error listing the layer names; unknown sections, keys or values are errors too.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping

from pquant.errors import ConfigError, check_keep_negatives, fail
from pquant.quant.granularity import Granularity
from pquant.quant.modes import OverflowMode, RoundMode
from pquant.quant.registry import resolve_kind
from pquant.quant.spec import QuantSpec

FORMAT_KEYS = ("keep_negatives", "integer_bits", "fractional_bits", "round_mode",
               "overflow_mode")
SECTIONS = {
    "weight": FORMAT_KEYS + ("granularity", "quantizer"),
    "bias": FORMAT_KEYS + ("granularity", "quantizer"),
    "input": FORMAT_KEYS + ("quantize", "quantizer"),
    "output": FORMAT_KEYS + ("quantize", "quantizer"),
}
#: an entry's layer-level key: the quantizer kind of every role of the layer (a role's own
#: ``quantizer`` wins)
LAYER_KEYS = ("quantizer",)


def _check_kind(path: str, value) -> None:
    try:
        resolve_kind(value, path)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _enum_name(path: str, value, enum_type) -> str:
    name = getattr(value, "name", value)
    if name not in enum_type.__members__:
        raise fail(path, f"be one of {list(enum_type.__members__)}", value)
    return name


def validate_layer_specific(table: Mapping, path: str = "quantization.layer_specific") -> None:
    """Check the structure and values of the table (names are matched later, with the model)."""
    for pattern, entry in table.items():
        where = f"{path}.{pattern}"
        if not isinstance(entry, Mapping):
            raise fail(where, f"be a mapping with sections {list(SECTIONS)}", entry)
        for section, values in entry.items():
            if section in LAYER_KEYS:
                _check_kind(f"{where}.{section}", values)
                continue
            if section not in SECTIONS:
                raise fail(f"{where}", f"only have the sections {list(SECTIONS)} (and "
                           f"{list(LAYER_KEYS)}); '{section}' is not one", section)
            if not isinstance(values, Mapping):
                raise fail(f"{where}.{section}", f"be a mapping with keys {SECTIONS[section]}",
                           values)
            for key, value in values.items():
                key_path = f"{where}.{section}.{key}"
                if key not in SECTIONS[section]:
                    raise fail(f"{where}.{section}", f"only have the keys "
                               f"{list(SECTIONS[section])}; '{key}' is not one", key)
                if key == "keep_negatives":
                    check_keep_negatives(key_path, value)
                elif key in ("integer_bits", "fractional_bits"):
                    if isinstance(value, bool) or not isinstance(value, int):
                        raise fail(key_path, "be an integer", value)
                elif key == "round_mode":
                    _enum_name(key_path, value, RoundMode)
                elif key == "overflow_mode":
                    _enum_name(key_path, value, OverflowMode)
                elif key == "granularity":
                    _enum_name(key_path, value, Granularity)
                elif key == "quantize" and not isinstance(value, bool):
                    raise fail(key_path, "be true or false", value)
                elif key == "quantizer":
                    _check_kind(key_path, value)
            if all(k in values for k in FORMAT_KEYS[:3]):
                width = sum(int(values[k]) for k in FORMAT_KEYS[:3])
                if width < 1:
                    raise fail(f"{where}.{section}", "be a format at least 1 bit wide "
                               "(keep_negatives + integer_bits + fractional_bits >= 1)",
                               f"{width} bits from " + ", ".join(
                                   f"{k}={values[k]}" for k in FORMAT_KEYS[:3]))


class LayerOverrides:
    """Resolves the table for layer names and remembers which entries were used."""

    def __init__(self, table: Mapping) -> None:
        validate_layer_specific(table)
        globs = [(k, v) for k, v in table.items() if any(c in k for c in "*?[")]
        exact = [(k, v) for k, v in table.items() if (k, v) not in globs]
        self.entries = globs + exact
        self.used: set[str] = set()
        self.layer_names: list[str] = []

    def for_layer(self, name: str, allowed_sections) -> dict[str, dict]:
        """Merged sections for ``name``; raises if an entry uses a section the layer lacks."""
        self.layer_names.append(name)
        merged: dict[str, dict] = {}
        for pattern, entry in self.entries:
            if not (pattern == name or fnmatch.fnmatchcase(name, pattern)):
                continue
            self.used.add(pattern)
            if "quantizer" in entry:  # (before the entry's own role sections, which win)
                for role in allowed_sections:
                    merged.setdefault(role, {})["quantizer"] = entry["quantizer"]
            for section, values in entry.items():
                if section in LAYER_KEYS:
                    continue
                if section not in allowed_sections:
                    raise ConfigError(
                        f"quantization.layer_specific.{pattern}: layer '{name}' has no "
                        f"'{section}' quantizer; its sections are {list(allowed_sections)}")
                merged.setdefault(section, {}).update(values)
        return merged

    def check_all_used(self) -> None:
        unused = [p for p, _ in self.entries if p not in self.used]
        if unused:
            raise ConfigError(
                "quantization.layer_specific keys must name converted layers (dotted names as in "
                f"model.named_modules(), globs allowed): {self.layer_names}; got {unused}, which "
                "match nothing")


def apply_overrides(spec: QuantSpec, values: Mapping) -> QuantSpec:
    """``spec`` with the format keys of one section applied."""
    changes = {}
    for key, field in (("keep_negatives", "k"), ("integer_bits", "i"),
                       ("fractional_bits", "f")):
        if key in values:
            changes[field] = int(values[key])
    if "round_mode" in values:
        changes["round_mode"] = RoundMode[_enum_name("round_mode", values["round_mode"], RoundMode)]
    if "overflow_mode" in values:
        changes["overflow_mode"] = OverflowMode[
            _enum_name("overflow_mode", values["overflow_mode"], OverflowMode)]
    return spec.with_(**changes) if changes else spec
