"""Every configuration error of ``python -m pquant``: one line on stderr, exit status 2, no
traceback, and no MLflow run (a real sqlite store in a temp dir is checked)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pquant.__main__ import CONFIG_ERROR_EXIT

#: everything here runs in subprocesses pinned to the torch path (PQUANT_KERNELS=off), so it is
#: the same work on both CI passes: the pass with the kernels leaves it to the torch-path pass
pytestmark = pytest.mark.torch_path

CASES = [
    (["quantization.default_weight_integer_bits=-100"],
     "quantization: the default weight format must be at least 1 bit wide (keep_negatives + "
     "integer_bits + fractional_bits >= 1), got k=1, i=-100, f=7 (-92 bits)"),
    (["+quantization.layer_specific={fc1: {weight: {integer_bits: -20}}}"],
     "quantization.layer_specific for layer fc1 (weight): total width k + i + f must be at "
     "least 1 bit, got k=1, i=-20, f=7 (-12 bits)"),
    (["+quantization.layer_specific={fc1: {input: {keep_negatives: 0, integer_bits: -3, "
      "fractional_bits: 2}}}"],
     "quantization.layer_specific.fc1.input must be a format at least 1 bit wide"),
    (["data=synthetic", "data.n_classes=1"],
     "data.n_classes must be >= 2 (a classifier needs at least two classes), got 1"),
    (["+foo=1"], "foo is not a setting: the top level has no key 'foo'"),
    (["+training.fine_tunning_epochs=3"],
     "training.fine_tunning_epochs is not a setting (did you mean fine_tuning_epochs?)"),
    (["pruning=wanda", "pruning.threshold_decay=0.01"],
     "pruning.threshold_decay must be 0 with pruning=wanda"),
    (["pruning=activation_pruning", "pruning.threshold_decay=0.01"],
     "pruning.threshold_decay must be 0 with pruning=activation_pruning"),
    (["pruning.sparsity=1.2"], "pruning.sparsity must be in [0, 1), got 1.2"),
    (["pruning.spars=0.5"], "pruning.spars is not a setting"),
    (["quantization.round_mode=NEAREST"],
     "quantization.round_mode must be one of [TRN, RND, RND_CONV, TRN_ZERO, RND_ZERO, "
     "RND_MIN_INF, RND_INF], got 'NEAREST'"),
    (["pruning=foo"], "pruning must be one of [activation_pruning, autosparse, cs, dst, mdmm, "
                      "none, pdp, wanda], got 'foo'"),
    (["training.epochs=abc"], "training.epochs must be of type Integer, got 'abc'"),
]


def run_pquant(args, cwd, env_extra=None, timeout=300):
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", PQUANT_KERNELS="off")
    for name in ("HYDRA_FULL_ERROR", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "pquant", *args], cwd=cwd, capture_output=True,
                          text=True, env=env, timeout=timeout)


def mlflow_run_count(db) -> int:
    """Runs in every experiment of the sqlite store ``db`` (0 if it was never created)."""
    if not db.exists():
        return 0
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    return len(client.search_runs(experiments)) if experiments else 0


@pytest.mark.parametrize(("overrides", "message"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_config_error_is_one_line_exit_2_and_no_run(tmp_path, overrides, message):
    db = tmp_path / "store" / "mlflow.db"
    result = run_pquant([*overrides, "training.epochs=1", "training.pretraining_epochs=0",
                         f"tracking.uri=sqlite:///{db}"], tmp_path)
    assert result.returncode == CONFIG_ERROR_EXIT, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(message), lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert mlflow_run_count(db) == 0


def test_full_error_keeps_the_traceback(tmp_path):
    result = run_pquant(["+foo=1", "tracking=none"], tmp_path, {"HYDRA_FULL_ERROR": "1"})
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_extra_training_key_is_a_warning_and_the_run_goes_on(tmp_path):
    result = run_pquant(["data=synthetic", "training.epochs=1", "training.pretraining_epochs=0",
                         "+training.my_note=abc", "tracking=none"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "training.my_note is not a setting pquant reads" in result.stdout + result.stderr
