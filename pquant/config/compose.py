"""``load_config``: the command line's composition, as a library call."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from pquant.config.store import register_configs

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def load_config(overrides: Sequence[str] = (), *, return_hydra_config: bool = False) -> DictConfig:
    """Compose the pquant config exactly as ``python -m pquant <overrides>`` would.

    Args:
        overrides: Hydra overrides, e.g. ``["pruning=pdp", "quantization=fixed",
            "training.epochs=10"]``.
        return_hydra_config: keep the ``hydra`` node (needed by code that reads HydraConfig).

    Returns:
        The composed config. Schema errors (unknown keys, wrong types, unknown modes) raise
        Hydra/OmegaConf exceptions naming the key; value ranges are checked by
        :func:`pquant.config.sections.sections`.
    """
    register_configs()
    gh = GlobalHydra.instance()
    if gh.is_initialized():
        # Inside a running Hydra app (or a test that initialised Hydra): compose on a clean slate
        # and restore the caller's state afterwards.
        saved = gh.hydra
        gh.clear()
        try:
            return _compose(overrides, return_hydra_config)
        finally:
            gh.clear()
            GlobalHydra.instance().initialize(saved)
    return _compose(overrides, return_hydra_config)


def _compose(overrides, return_hydra_config):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="pquant"):
        return compose("config", overrides=list(overrides), return_hydra_config=return_hydra_config)
