"""The command line end to end (subprocesses, as a user runs it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SHORT = ["data=synthetic", "training.epochs=4", "training.pretraining_epochs=1",
         "training.fine_tuning_epochs=1"]
FAST = SHORT + ["pruning.epsilon=0.5"]


def _pquant(args, cwd, timeout=600):
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "pquant", *args], cwd=cwd, capture_output=True,
                          text=True, env=env, timeout=timeout)


def _mlflow_runs(db: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name("pquant")
    return client.search_runs([exp.experiment_id])


def test_single_run_prints_summary_and_tracks(tmp_path):
    result = _pquant(FAST, tmp_path)
    assert result.returncode == 0, result.stderr
    for fragment in ("pquant summary", "accuracy", "sparsity", "EBOPs", "MLflow run",
                     "mlflow ui --backend-store-uri sqlite:///"):
        assert fragment in result.stdout
    db = tmp_path / "outputs" / "mlflow.db"
    assert db.is_file()
    (run,) = _mlflow_runs(db)
    assert run.info.status == "FINISHED"
    assert run.data.tags["choice.pruning"] == "pdp"
    assert run.data.tags["choice.quantization"] == "fixed"
    reports = list((tmp_path / "outputs" / "runs").rglob("report.json"))
    assert len(reports) == 1


def test_float_baseline_through_the_same_path(tmp_path):
    result = _pquant(SHORT + ["pruning=none", "quantization=none", "tracking=none"], tmp_path)
    assert result.returncode == 0, result.stderr
    (report,) = (tmp_path / "outputs" / "runs").rglob("report.json")
    r = json.loads(report.read_text())
    assert r["sparsity/global"] == 0.0 and r["bits/weight/mean"] == 32.0


def test_multirun_creates_parent_and_children(tmp_path):
    # (pruning.epsilon only exists for pdp, so it cannot be set across a choice of methods)
    result = _pquant(["-m", "pruning=pdp,none", *SHORT, f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                     tmp_path)
    assert result.returncode == 0, result.stderr
    runs = _mlflow_runs(tmp_path / "outputs" / "mlflow.db")
    parents = [r for r in runs if r.data.tags.get("pquant.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("pquant.kind") == "job"]
    assert len(parents) == 1 and len(children) == 2
    assert parents[0].info.status == "FINISHED"
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert child.info.status == "FINISHED"
    assert {c.data.tags["choice.pruning"] for c in children} == {"pdp", "none"}


def test_failing_multirun_marks_parent_failed(tmp_path):
    result = _pquant(["-m", "pruning.sparsity=0.5,1.5", *FAST,
                      f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path)
    assert result.returncode != 0
    assert "pruning.sparsity must be in [0, 1), got 1.5" in result.stderr
    runs = _mlflow_runs(tmp_path / "outputs" / "mlflow.db")
    parents = [r for r in runs if r.data.tags.get("pquant.kind") == "sweep"]
    assert parents[0].info.status == "FAILED"
    assert all(r.info.status != "RUNNING" for r in runs)


@pytest.mark.slow
def test_default_command_meets_the_acceptance_bar(tmp_path):
    """``python -m pquant`` with no arguments: digits MLP, PDP 0.8, 8-bit fixed point."""
    result = _pquant([], tmp_path)
    assert result.returncode == 0, result.stderr
    (report,) = (tmp_path / "outputs" / "runs").rglob("report.json")
    r = json.loads(report.read_text())
    assert r["test/accuracy"] >= 0.95
    assert abs(r["sparsity/global"] - 0.8) <= 0.01
    assert r["bits/weight/mean"] == 8.0
    (run,) = _mlflow_runs(tmp_path / "outputs" / "mlflow.db")
    assert run.info.status == "FINISHED"


@pytest.mark.parametrize("overrides", [
    ["pruning=pdp", "quantization.use_hgq=true"],
    ["model=cnn", "quantization=hgq"],
    ["model=conv1d", "quantization.granularity=per_channel"],
], ids=["pdp-use_hgq", "cnn-hgq", "conv1d-per_channel"])
def test_quantization_variants_end_to_end(tmp_path, overrides):
    args = ["training.epochs=3", "training.pretraining_epochs=1", "training.fine_tuning_epochs=1",
            "pruning.epsilon=0.5", "tracking=none", *overrides]
    result = _pquant(args, tmp_path)
    assert result.returncode == 0, result.stderr
    (report,) = (tmp_path / "outputs" / "runs").rglob("report.json")
    r = json.loads(report.read_text())
    weight_layers = [k.split("/", 2)[2] for k in r if k.startswith("bits/weight/")
                     and k != "bits/weight/mean"]
    assert weight_layers
    for layer in weight_layers:
        assert f"ebops/{layer}" in r and r[f"ebops/{layer}"] > 0
    assert (report.parent / "model_final.pt").is_file()
    if "model=cnn" in overrides:
        assert any(k.startswith("ebops/bn") for k in r) and any(k.startswith("ebops/pool")
                                                                for k in r)
