"""Quantizer kinds chosen by ``_target_``: discovery, presets, the boolean selectors, per-layer
kinds, and a kind added from outside the package (one .py + one .yaml) trained end to end."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from pquant.config.compose import load_config
from pquant.config.sections import sections
from pquant.errors import ConfigError
from pquant.nn.replace import add_compression_layers
from pquant.quant.adaptive import DynamicDataQuantizer
from pquant.quant.hgq import HGQQuantizer
from pquant.quant.quantizer import FixedPointQuantizer
from pquant.quant.range_split import RangeSplitQuantizer
from pquant.quant.registry import quantizer_kinds, resolve_kind

TOY = Path(__file__).resolve().parent / "toy"


def _quant(overrides):
    return sections(load_config(overrides)).quantization


def test_package_kinds_are_discovered_with_their_targets():
    kinds = quantizer_kinds()
    assert {"fixed", "hgq", "dynamic"} <= set(kinds)
    assert kinds["hgq"]()._target_ == "pquant.quant.hgq.HGQQuantizer"
    assert kinds["hgq"]().quantizer_class() is HGQQuantizer


@pytest.mark.parametrize("overrides, name, hgq, dynamic", [
    ([], "fixed", False, False),
    (["quantization=hgq"], "hgq", True, False),
    (["quantization=dynamic"], "dynamic", False, True),
    # the reference's selectors still pick the kinds on the fixed preset
    (["quantization.use_hgq=true"], "hgq", True, False),
    (["quantization.dynamic_data_quantization=true"], "dynamic", False, True),
    (["quantization.quantizer=hgq", "quantization.use_hgq=true"], "hgq", True, False),
])
def test_presets_and_selectors_resolve_to_kinds(overrides, name, hgq, dynamic):
    q = _quant(overrides)
    assert q.quantizer.name == name
    assert (q.use_hgq, q.dynamic_data_quantization) == (hgq, dynamic)


@pytest.mark.parametrize("overrides, fragments", [
    (["quantization=hgq", "quantization.use_hgq=false"],
     ["quantization.use_hgq=false contradicts", "'hgq'", "set quantization.use_hgq=true"]),
    (["quantization=dynamic", "quantization.use_hgq=true"],
     ["dynamic_data_quantization=true", "use_hgq=true"]),
    (["quantization=dynamic", "quantization.dynamic_data_quantization=false"],
     ["quantization.dynamic_data_quantization=false contradicts", "'dynamic'"]),
    (["quantization.quantizer._target_=no.such.Quantizer"],
     ["quantization.quantizer._target_ must name an importable quantizer class"]),
    (["quantization.quantizer=nonesuch"], ["must be one of the quantizer kinds", "'hgq'"]),
    (["quantization=dynamic", "+quantization.quantizer.moment=0.2"],
     ["has no setting 'moment'", "momentum"]),
    (["quantization=dynamic", "quantization.quantizer.momentum=0"], ["momentum must be in"]),
])
def test_contradictions_and_bad_kinds_are_refused(overrides, fragments):
    with pytest.raises(ConfigError) as err:
        _quant(overrides)
    for fragment in fragments:
        assert fragment in str(err.value)


def _mlp():
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def test_builders_follow_the_kind():
    fixed = add_compression_layers(_mlp(), load_config(["quantization.granularity=per_channel"]))
    assert isinstance(fixed[0].input_quantizer, FixedPointQuantizer)
    assert isinstance(fixed[0].weight_quantizer, RangeSplitQuantizer)
    assert isinstance(fixed[0].bias_quantizer, FixedPointQuantizer)  # (one format per bias)
    dyn = add_compression_layers(_mlp(), load_config(["quantization=dynamic",
                                                      "quantization.quantizer.momentum=0.5"]))
    assert isinstance(dyn[0].input_quantizer, DynamicDataQuantizer)
    assert dyn[0].input_quantizer.momentum == 0.5
    assert isinstance(dyn[0].weight_quantizer, FixedPointQuantizer)
    hgq = add_compression_layers(_mlp(), load_config(["quantization=hgq"]))
    assert isinstance(hgq[0].bias_quantizer, HGQQuantizer)
    assert tuple(hgq[0].bias_quantizer.f.shape) == (16,)  # biases follow per_weight
    assert tuple(hgq[0].input_quantizer.f.shape) == (8,)  # per feature


def test_layer_specific_picks_a_kind_per_layer_and_per_role():
    cfg = load_config([])
    cfg.quantization.layer_specific = {
        "0": {"quantizer": "hgq", "bias": {"quantizer": "fixed"}},
        "2": {"weight": {"quantizer": {"_target_": "pquant.quant.hgq.HGQQuantizer"}}},
    }
    model = add_compression_layers(_mlp(), cfg)
    first, last = model[0], model[2]
    assert isinstance(first.weight_quantizer, HGQQuantizer)
    assert isinstance(first.input_quantizer, HGQQuantizer)
    assert isinstance(first.output_quantizer, HGQQuantizer)
    assert isinstance(first.bias_quantizer, FixedPointQuantizer)  # the role's own entry wins
    assert isinstance(last.weight_quantizer, HGQQuantizer)
    assert isinstance(last.input_quantizer, FixedPointQuantizer)
    # the HGQ terms apply to learnable quantizers wherever they come from
    from pquant.training.losses import CompressionLoss

    loss = CompressionLoss(model, sections(cfg))
    assert loss.hgq and len(loss.learnable) == 4
    loss.close()


def test_layer_specific_refuses_an_unknown_kind():
    cfg = load_config([])
    cfg.quantization.layer_specific = {"0": {"weight": {"quantizer": "nonesuch"}}}
    with pytest.raises(ConfigError, match=r"layer_specific\.0\.weight\.quantizer must be one of"):
        sections(cfg)


def test_resolve_kind_accepts_names_targets_and_mappings():
    assert resolve_kind("dynamic", "p").name == "dynamic"
    assert resolve_kind("pquant.quant.hgq.HGQQuantizer", "p").name == "hgq"
    assert resolve_kind({"_target_": "pquant.quant.adaptive.DynamicDataQuantizer",
                         "momentum": 0.25}, "p").momentum == 0.25


# ------------------------------------------------------------------ a kind from outside
def _project(tmp_path: Path) -> Path:
    """A project directory holding the toy kind: one .py and one .yaml, nothing else."""
    shutil.copy(TOY / "pot_quant.py", tmp_path / "pot_quant.py")
    (tmp_path / "conf" / "quantization").mkdir(parents=True)
    shutil.copy(TOY / "pot.yaml", tmp_path / "conf" / "quantization" / "pot.yaml")
    return tmp_path


def _pquant(args, cwd):
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", PQUANT_KERNELS="off")
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "pquant", *args], cwd=cwd, capture_output=True,
                          text=True, env=env, timeout=600)


def test_a_toy_quantizer_from_one_file_and_one_yaml_trains(tmp_path):
    project = _project(tmp_path)
    run_dir = project / "run"
    result = _pquant(["quantization=pot", "data=digits", "training.pretraining_epochs=1",
                      "training.epochs=2", "training.fine_tuning_epochs=1", "pruning.epsilon=0.5",
                      "tracking=none", f"hydra.run.dir={run_dir}"], project)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((run_dir / "report.json").read_text())
    # signed weights and inputs: 9 exponents and zero -> 4 bits plus the sign
    for layer in ("fc1", "fc2", "fc3", "out"):
        assert report[f"bits/weight/{layer}"] == 5.0
        assert report[f"bits/input/{layer}"] == 5.0
        assert report[f"ebops/{layer}"] > 0
    assert report["test/accuracy"] > 0.2  # it trains (10 classes)
    summary = result.stdout[result.stdout.index("pquant summary"):]
    assert "fc1" in summary and "5.00" in summary
    # the finalised weights are the toy's values: zero or +-2**e, e in [-8, 0]
    state = torch.load(run_dir / "model_final.pt", weights_only=True)
    weights = torch.cat([v.reshape(-1) for k, v in state.items() if k.endswith(".weight")])
    nonzero = weights[weights != 0].abs()
    exponents = torch.log2(nonzero)
    assert torch.equal(exponents, torch.round(exponents))
    assert exponents.min() >= -8 and exponents.max() <= 0


def test_a_toy_quantizer_contradicting_use_hgq_is_refused(tmp_path):
    project = _project(tmp_path)
    result = _pquant(["quantization=pot", "quantization.use_hgq=true", "tracking=none",
                      f"hydra.run.dir={project / 'run'}"], project)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "quantization.use_hgq=true selects the 'hgq' quantizer but quantization.quantizer " \
           "is 'pot'" in result.stderr
    assert math.isfinite(len(result.stderr))
