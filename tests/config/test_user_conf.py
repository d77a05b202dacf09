"""The project's own conf/ (in the working directory) comes before the packaged defaults."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pquant.config.sections import sections

ROOT = Path(__file__).resolve().parents[2]
BUNDLES = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))

MYNET = """\
# a user's own model, outside the package
_target_: pquant.models.mlp.mlp
hidden_sizes: [12]
activation: tanh
"""


def test_a_model_in_the_project_conf_is_selectable(tmp_path):
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "mynet.yaml").write_text(MYNET)
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    args = ["model=mynet", "data=synthetic", "training.epochs=1", "training.pretraining_epochs=0",
            "pruning.epsilon=1.0", "tracking=none", f"hydra.run.dir={tmp_path / 'run'}"]
    done = subprocess.run([sys.executable, "-m", "pquant", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    state = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert tuple(state["fc1.weight"].shape) == (12, 16)
    assert "out.weight" in state and "fc2.weight" not in state
    # from any other directory the option does not exist
    elsewhere = subprocess.run([sys.executable, "-m", "pquant", *args], cwd=tmp_path / "run",
                               env=env, capture_output=True, text=True, timeout=600)
    assert elsewhere.returncode != 0 and "mynet" in elsewhere.stderr


def test_library_composition_sees_the_project_conf(tmp_path, monkeypatch, compose):
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "mynet.yaml").write_text(MYNET)
    monkeypatch.chdir(tmp_path)
    cfg = compose(["model=mynet"])
    assert list(cfg.model.hidden_sizes) == [12] and cfg.pruning.pruning_method == "pdp"


@pytest.mark.parametrize("bundle", BUNDLES)
def test_every_experiment_bundle_composes(bundle, monkeypatch, compose):
    monkeypatch.chdir(ROOT)
    cfg = compose([f"+experiment={bundle}"])
    s = sections(cfg)
    assert cfg.tracking.experiment_name == bundle
    assert s.training.epochs >= 1
    head = (ROOT / "conf" / "experiment" / f"{bundle}.yaml").read_text().splitlines()[0]
    assert head == "# @package _global_"


def test_bundles_are_listed_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    for bundle in BUNDLES:
        assert f"+experiment={bundle}" in readme
