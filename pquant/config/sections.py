"""Typed, validated views of the config sections.

``sections(cfg)`` turns a composed config (DictConfig) -- or a plain dict with some sections --
into dataclass objects and runs every range check. Missing sections take the schema defaults;
a dict ``pruning`` section picks its schema through ``pruning_method``.
"""

from __future__ import annotations

from dataclasses import dataclass, is_dataclass
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pquant.config.extra_keys import check_section_keys, check_top_level
from pquant.config.registry import base_schema, schemas
from pquant.config.schema import (
    FinetuningConfig,
    FitCompressConfig,
    PQuantConfig,
    QuantizationConfig,
    TrainingConfig,
)
from pquant.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover - annotations only; the classes are found by discovery
    from pquant.pruning.base import PruningConfig

#: the pruning option used when a config has no pruning section
NO_PRUNING = "none"


def pruning_schemas() -> dict[str, type[PruningConfig]]:
    """Every pruning-method schema, keyed by method name.

    Each module of :mod:`pquant.pruning` (one file per method) registers its
    :class:`~pquant.pruning.base.PruningConfig` subclass when imported (found by
    :mod:`pquant.config.registry`), and so does a subclass a user defined and imported elsewhere.
    """
    return schemas("pruning")


def _pruning_base() -> type[PruningConfig]:
    """The contract every pruning schema derives from (registered by :mod:`pquant.pruning.base`)."""
    return base_schema("pruning")


@dataclass
class Sections:
    """The validated sections, as dataclass objects."""

    training: TrainingConfig
    pruning: PruningConfig
    quantization: QuantizationConfig
    fitcompress: FitCompressConfig
    finetuning: FinetuningConfig


_SIMPLE = {
    "training": TrainingConfig,
    "quantization": QuantizationConfig,
    "fitcompress": FitCompressConfig,
    "finetuning": FinetuningConfig,
}


def _to_object(name: str, node, schema: type):
    if node is None:
        return schema()
    if is_dataclass(node) and not isinstance(node, type):
        return node
    try:
        if isinstance(node, DictConfig) and OmegaConf.get_type(node) is schema:
            return OmegaConf.to_object(node)
        merged = OmegaConf.merge(OmegaConf.structured(schema), node)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _pruning_object(node):
    if node is None:
        return pruning_schemas()[NO_PRUNING]()
    if isinstance(node, _pruning_base()):
        return node
    if isinstance(node, DictConfig):
        node_type = OmegaConf.get_type(node)
        if isinstance(node_type, type) and issubclass(node_type, _pruning_base()):
            check_section_keys("pruning", node, node_type)
            return OmegaConf.to_object(node)
    schemas = pruning_schemas()
    method = (node or {}).get("pruning_method") if hasattr(node, "get") else None
    if method not in schemas:
        raise ConfigError(
            f"pruning.pruning_method must be one of {sorted(schemas)}, got {method!r}"
        )
    check_section_keys("pruning", node, schemas[method])
    return _to_object("pruning", node, schemas[method])


def sections(cfg) -> Sections:
    """Validated dataclass views of ``cfg``'s sections (raises :class:`ConfigError`)."""
    get = cfg.get if hasattr(cfg, "get") else (lambda key, default=None: default)
    if isinstance(cfg, DictConfig) and OmegaConf.get_type(cfg) is PQuantConfig:
        check_top_level(cfg, PQuantConfig)  # a composed config (not a dict of some sections)
    for name, schema in _SIMPLE.items():
        check_section_keys(name, get(name), schema)
    objs = {name: _to_object(name, get(name), schema) for name, schema in _SIMPLE.items()}
    result = Sections(pruning=_pruning_object(get("pruning")), **objs)
    result.training.validate("training")
    result.pruning.validate("pruning")
    result.quantization.validate("quantization")
    result.fitcompress.validate("fitcompress")
    result.fitcompress.check_composition(result.quantization, result.pruning)
    result.finetuning.validate("finetuning")
    return result
