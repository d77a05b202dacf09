"""Packaged presets set only what differs from their schema: one source of truth per default."""

from __future__ import annotations

import re

import pytest
import yaml
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from pquant.config.compose import CONF_DIR
from pquant.config.store import register_configs

PRESETS = sorted(p for p in CONF_DIR.rglob("*.yaml")
                 if re.search(r"^\s*- /schema/[\w/]+@_here_", p.read_text(), re.M))


@pytest.mark.parametrize("path", PRESETS, ids=[str(p.relative_to(CONF_DIR)) for p in PRESETS])
def test_preset_restates_no_schema_default(path):
    register_configs()
    text = path.read_text()
    schema = re.search(r"^\s*- /schema/([\w/]+)@_here_", text, re.M).group(1)
    defaults = OmegaConf.to_container(ConfigStore.instance().load(f"schema/{schema}.yaml").node,
                                      enum_to_str=True)
    own = {k: v for k, v in (yaml.safe_load(text) or {}).items() if k != "defaults"}
    restated = sorted(k for k, v in own.items() if k in defaults and defaults[k] == v)
    assert not restated, f"{path.name} restates schema defaults: {restated}"
