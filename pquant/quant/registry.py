"""Quantizer kinds: chosen by ``_target_``, discovered like pruning methods.

A kind is one ``.py`` file holding a :class:`QuantizerConfig` dataclass (its own settings, a
``name`` and the ``_target_`` default naming its quantizer class) and the quantizer class (a
:class:`~pquant.quant.base.Quantizer` subclass implementing the builders ``for_parameter`` and
``for_data``), plus one YAML in the ``quantization`` config group that names it::

    quantizer:
      _target_: mypackage.pot.PowerOfTwoQuantizer
      min_exponent: -8

The kinds of this package (``fixed``, ``hgq``, ``dynamic``) are found by importing its modules;
any other kind is found through its ``_target_``: importing the target's module defines its
config dataclass (a module in the directory a run starts from, or any installed package).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import ClassVar


@dataclass
class QuantizerConfig:
    """The schema of ``quantization.quantizer`` (and of a ``layer_specific`` ``quantizer``).

    Subclasses set ``name`` (how presets and ``layer_specific`` may refer to the kind), the
    ``_target_`` default (the quantizer class) and add their own fields; ``validate`` checks
    their values (raise ``ValueError`` naming ``path``).
    """

    name: ClassVar[str] = "???"
    _target_: str = "???"

    def validate(self, path: str) -> None:
        """Check the kind's own settings (none by default)."""

    def quantizer_class(self) -> type:
        """The class named by ``_target_`` (raises ``ValueError`` when it cannot be imported or
        is not a quantizer)."""
        return _import_quantizer(self._target_, "quantizer._target_")


def _import_quantizer(target: str, path: str) -> type:
    from pquant.quant.base import Quantizer

    module_name, _, attr = str(target).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"{path} must name an importable quantizer class (module.Class; a module "
                         f"in the directory the run starts from or an installed package), got "
                         f"{target!r} ({exc})") from None
    if not (isinstance(cls, type) and issubclass(cls, Quantizer)):
        raise ValueError(f"{path} must name a subclass of pquant.quant.base.Quantizer, got "
                         f"{target!r}")
    return cls


def _subclasses() -> list[type[QuantizerConfig]]:
    found, stack = [], list(QuantizerConfig.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        found.append(cls)
    return found


def quantizer_kinds() -> dict[str, type[QuantizerConfig]]:
    """Every known kind's config dataclass, keyed by name: this package's (each module is
    imported) and any defined by modules imported elsewhere."""
    import pquant.quant as package

    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")
    return {cls.name: cls for cls in _subclasses() if cls.name != "???"}


def _schema_for(target: str, path: str) -> type[QuantizerConfig]:
    _import_quantizer(target, f"{path}._target_")  # (defines the kind's dataclass)
    quantizer_kinds()
    for cls in _subclasses():
        if cls._target_ == target:
            return cls
    raise ValueError(f"{path}._target_={target!r} names a quantizer without a config: its module "
                     f"must define a QuantizerConfig subclass whose _target_ default is "
                     f"{target!r}")


def resolve_kind(value, path: str) -> QuantizerConfig:
    """The kind ``value`` asks for: a :class:`QuantizerConfig`, a kind name (``"hgq"``), a
    ``module.Class`` target, or a mapping with ``_target_`` and the kind's settings.

    Raises:
        ValueError: unknown kind or target, unknown setting, wrong type or invalid value (the
            message names ``path``, the allowed values and what was given).
    """
    if isinstance(value, QuantizerConfig):
        return value
    if isinstance(value, str):
        kinds = quantizer_kinds()
        if value in kinds:
            return kinds[value]()
        if "." not in value:
            raise ValueError(f"{path} must be one of the quantizer kinds {sorted(kinds)} or a "
                             f"_target_ (module.Class), got {value!r}")
        value = {"_target_": value}
    if not isinstance(value, Mapping) or "_target_" not in value:
        raise ValueError(f"{path} must be a kind name or a mapping with a _target_, got {value!r}")
    schema = _schema_for(str(value["_target_"]), path)
    allowed = [f.name for f in fields(schema)]
    unknown = [k for k in value if k not in allowed]
    if unknown:
        raise ValueError(f"{path} has no setting {unknown[0]!r}: the settings of "
                         f"{schema.__name__} are {allowed}")
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), dict(value))
        config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise ValueError(f"{path}: {exc}") from None
    config.validate(path)
    config.quantizer_class()
    return config
