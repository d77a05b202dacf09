"""Registration of the structured-config schemas in Hydra's ConfigStore.

Called explicitly (by ``python -m pquant`` and ``load_config``), never at import of ``pquant``.
Group configs name their schema in their defaults list, e.g. ``pruning/pdp.yaml`` starts with
``- /schema/pruning/pdp@_here_``; schemas live under ``schema/`` so that they do not show up as
selectable options of the groups.

The sections defined in :mod:`pquant.config.schema` are stored here by name; the options that
domain modules define (pruning methods, data sets, models, distillation, export) are found by
:mod:`pquant.config.registry`, which imports those modules by name -- config never imports them.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from pquant.config.registry import PROVIDERS, schemas
from pquant.config.schema import (
    FinetuningConfig,
    FitCompressConfig,
    PQuantConfig,
    QuantizationConfig,
    TrackingConfig,
    TrainingConfig,
)

_stored: set[tuple[str, str, int]] = set()


def register_configs() -> None:
    """Store every schema (idempotent; schemas registered since the last call are added)."""
    cs = ConfigStore.instance()
    nodes: list[tuple[str, str, type]] = [("", "pquant_schema", PQuantConfig)]
    for group, node in (
        ("training", TrainingConfig),
        ("quantization", QuantizationConfig),
        ("fitcompress", FitCompressConfig),
        ("finetuning", FinetuningConfig),
        ("tracking", TrackingConfig),
    ):
        nodes.append((f"schema/{group}", "default", node))
    for group in PROVIDERS:
        nodes.extend((f"schema/{group}", name, node) for name, node in schemas(group).items())
    for group, name, node in nodes:
        key = (group, name, id(node))
        if key in _stored:
            continue
        if group:
            cs.store(group=group, name=name, node=node)
        else:
            cs.store(name=name, node=node)
        _stored.add(key)
