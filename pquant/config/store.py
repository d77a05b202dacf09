"""Registration of the structured-config schemas in Hydra's ConfigStore.

Called explicitly (by ``python -m pquant`` and ``load_config``), never at import of ``pquant``.
Group configs name their schema in their defaults list, e.g. ``pruning/pdp.yaml`` starts with
``- /schema/pruning/pdp@_here_``; schemas live under ``schema/`` so that they do not show up as
selectable options of the groups.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from pquant.config.schema import (
    FinetuningConfig,
    FitCompressConfig,
    PQuantConfig,
    QuantizationConfig,
    TrackingConfig,
    TrainingConfig,
)
from pquant.config.sections import pruning_schemas
from pquant.data.schema import (
    DigitsDataConfig,
    FilesDataConfig,
    JetsDataConfig,
    SyntheticDataConfig,
)
from pquant.distill.schema import DistillationConfig
from pquant.models.schema import CNNConfig, Conv1dConfig, MLPConfig

_registered = False


def register_configs() -> None:
    """Store every schema (idempotent)."""
    global _registered
    if _registered:
        return
    cs = ConfigStore.instance()
    cs.store(name="pquant_schema", node=PQuantConfig)
    for group, node in (
        ("training", TrainingConfig),
        ("quantization", QuantizationConfig),
        ("fitcompress", FitCompressConfig),
        ("finetuning", FinetuningConfig),
        ("tracking", TrackingConfig),
        ("distillation", DistillationConfig),
    ):
        cs.store(group=f"schema/{group}", name="default", node=node)
    for name, node in pruning_schemas().items():
        cs.store(group="schema/pruning", name=name, node=node)
    cs.store(group="schema/data", name="digits", node=DigitsDataConfig)
    cs.store(group="schema/data", name="synthetic", node=SyntheticDataConfig)
    cs.store(group="schema/data", name="files", node=FilesDataConfig)
    cs.store(group="schema/data", name="jets", node=JetsDataConfig)
    cs.store(group="schema/model", name="mlp", node=MLPConfig)
    cs.store(group="schema/model", name="cnn", node=CNNConfig)
    cs.store(group="schema/model", name="conv1d", node=Conv1dConfig)
    from pquant.export.config import ExportConfig

    cs.store(group="schema/export", name="default", node=ExportConfig)
    _registered = True
