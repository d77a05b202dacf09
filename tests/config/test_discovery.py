"""Data sets and models are discovered like pruning methods: one ``.py`` (schema + class) and one
``.yaml`` per option, nothing else edited -- inside the package or in a project's ``conf/``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pquant.config.registry import PROVIDERS, schemas

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "pquant" / "conf"

TOY_DATA = '''\
"""A toy data set: two noisy rings, 6 features."""

from dataclasses import dataclass

import numpy as np

from pquant.config.registry import register_schema
from pquant.data.base import ArrayDataModule
from pquant.data.schema import SplitConfig


class ToyData(ArrayDataModule):
    def __init__(self, n_samples: int = 200, radius: float = 2.0, val_fraction: float = 0.1,
                 test_fraction: float = 0.2, split_seed: int = 0) -> None:
        rng = np.random.default_rng(0)
        y = np.arange(n_samples) % 2
        angle = rng.uniform(0, 2 * np.pi, n_samples)
        r = 1.0 + y * radius
        x = np.stack([r * np.cos(angle), r * np.sin(angle)], 1)
        x = np.concatenate([x, rng.normal(size=(n_samples, 4))], 1)
        super().__init__(x, y, val_fraction=val_fraction, test_fraction=test_fraction,
                         split_seed=split_seed)


@register_schema("data", "toy")
@dataclass
class ToyDataConfig(SplitConfig):
    _target_: str = f"{__name__}.ToyData"
    n_samples: int = 200
    radius: float = 2.0
'''

TOY_MODEL = '''\
"""A toy model with its own layer names."""

from collections import OrderedDict
from dataclasses import dataclass

from torch import nn

from pquant.config.registry import register_schema


def toy_net(input_size: int, output_size: int, width: int = 8) -> nn.Sequential:
    return nn.Sequential(OrderedDict(toy_in=nn.Linear(input_size, width), act=nn.ReLU(),
                                     toy_out=nn.Linear(width, output_size)))


@register_schema("model", "toy")
@dataclass
class ToyNetConfig:
    _target_: str = f"{__name__}.toy_net"
    width: int = 8
'''


def _project(tmp_path: Path) -> Path:
    for group, code in (("data", TOY_DATA), ("model", TOY_MODEL)):
        folder = tmp_path / "conf" / group
        folder.mkdir(parents=True)
        (folder / "toy.py").write_text(code)
        (folder / "toy.yaml").write_text(f"defaults:\n  - /schema/{group}/toy@_here_\n"
                                         f"  - _self_\n")
    return tmp_path


def test_every_packaged_option_has_a_discovered_schema():
    """Each data/model YAML names a schema that its own module registered (no store line)."""
    for group, folder in (("data", "data"), ("model", "model")):
        found = schemas(group)
        for yaml in (CONF / folder).glob("*.yaml"):
            head = yaml.read_text()
            name = head.split(f"/schema/{group}/")[1].split("@")[0]
            assert name in found, (yaml, sorted(found))
            module = found[name].__module__
            assert module.startswith(PROVIDERS[group][0] + "."), module
    assert {"digits", "synthetic", "files", "jets"} <= set(schemas("data"))
    assert {"mlp", "cnn", "conv1d"} <= set(schemas("model"))


def test_config_store_names_no_data_set_or_model():
    """Adding one is a .py + a .yaml: pquant/config mentions none of them by name."""
    text = "\n".join(p.read_text() for p in (ROOT / "pquant" / "config").glob("*.py"))
    for word in ("DigitsDataConfig", "MLPConfig", "CNNConfig", "pquant.data.schema",
                 "pquant.models.schema", "DistillationConfig", "ExportConfig"):
        assert word not in text, word


def test_a_toy_data_set_and_model_in_the_project_conf_compose_typed(tmp_path, monkeypatch,
                                                                    compose):
    monkeypatch.chdir(_project(tmp_path))
    cfg = compose(["data=toy", "model=toy", "data.radius=3"])
    assert cfg.data._target_ == "pquant_conf.data.toy.ToyData" and cfg.data.radius == 3.0
    assert cfg.model.width == 8
    with pytest.raises(Exception, match="width"):  # the schema types the option
        compose(["data=toy", "model=toy", "model.width=wide"])
    with pytest.raises(Exception, match="depth"):  # and refuses unknown keys
        compose(["data=toy", "model=toy", "model.depth=3"])


def test_python_m_pquant_trains_with_a_toy_data_set_and_model(tmp_path):
    project = _project(tmp_path)
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", PQUANT_KERNELS="off")
    env.pop("HYDRA_FULL_ERROR", None)
    args = ["data=toy", "model=toy", "model.width=5", "training.epochs=2",
            "training.pretraining_epochs=1", "tracking=none",
            f"hydra.run.dir={project / 'run'}"]
    done = subprocess.run([sys.executable, "-m", "pquant", *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads((project / "run" / "report.json").read_text())
    assert "sparsity/toy_in" in report and "sparsity/toy_out" in report, sorted(report)
    assert report["params/toy_in/total"] == 6 * 5 + 5  # weights + biases
    assert report["params/toy_out/total"] == 5 * 2 + 2

    state = torch.load(project / "run" / "model.pt", weights_only=True)
    assert tuple(state["toy_in.weight"].shape) == (5, 6)  # 6 toy features, width 5
    assert tuple(state["toy_out.weight"].shape) == (2, 5)  # 2 classes
    assert 0 <= report["val/accuracy"] <= 1 and "training epoch 2/2" in done.stdout + done.stderr


def test_a_broken_project_module_is_one_clear_error(tmp_path):
    project = _project(tmp_path)
    (project / "conf" / "model" / "toy.py").write_text("import no_such_module_here\n")
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", PQUANT_KERNELS="off")
    env.pop("HYDRA_FULL_ERROR", None)
    done = subprocess.run([sys.executable, "-m", "pquant", "data=toy", "model=toy",
                           "tracking=none"], cwd=project, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 2
    assert "conf/model/toy.py could not be imported" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_the_readme_example_data_set_composes_and_builds(tmp_path, monkeypatch, compose):
    """The README's ``conf/data/rings.py`` example, as written there."""
    import re

    from hydra.utils import instantiate

    readme = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n# conf/data/rings.py.*?\n(.*?)```", readme, re.S).group(1)
    yaml = re.search(r"\(conf/data/rings.yaml: defaults: \[(.*?)\]\)", readme).group(1)
    folder = tmp_path / "conf" / "data"
    folder.mkdir(parents=True)
    (folder / "rings.py").write_text(code)
    (folder / "rings.yaml").write_text("defaults:\n" + "".join(
        f"  - {item.strip()}\n" for item in yaml.split(",")))
    monkeypatch.chdir(tmp_path)
    cfg = compose(["data=rings", "data.n_samples=100"])
    data = instantiate(cfg.data)
    assert type(data).__name__ == "Rings" and cfg.data.n_samples == 100
    with pytest.raises(Exception, match="n_samples"):
        compose(["data=rings", "data.n_samples=many"])
