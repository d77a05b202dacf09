"""``export=...`` after training, ``python -m pquant.export`` and ``pquant.load_run``, for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("qonnx")
pytest.importorskip("hls4ml")

import pquant  # noqa: E402
from pquant.errors import ConfigError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SHORT = ["training.epochs=1", "training.pretraining_epochs=0", "training.fine_tuning_epochs=0",
         "pruning.epsilon=0.5"]


def _env() -> dict:
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", PQUANT_KERNELS="off")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="module")
def exported_run(tmp_path_factory):
    """One real run with ``export=both`` (trains, exports, compiles, checks), tracked in MLflow."""
    tmp = tmp_path_factory.mktemp("run")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    run_dir = tmp / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "pquant", *SHORT, "export=both", f"tracking.uri={uri}",
         f"hydra.run.dir={run_dir}"], cwd=tmp, env=_env(), capture_output=True, text=True,
        timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, uri, proc.stdout


@pytest.mark.slow
def test_run_writes_checks_and_records_the_exports(exported_run):
    run_dir, uri, stdout = exported_run
    report = json.loads((run_dir / "report.json").read_text())
    assert report["export/mismatches"] == 0
    assert report["export/checked_samples"] == 360  # the digits test set
    assert report["export/qonnx/mismatches"] == 0 and report["export/hls4ml/mismatches"] == 0
    assert (run_dir / "model.qonnx.onnx").is_file()
    assert (run_dir / "hls4ml" / "firmware" / "myproject.cpp").is_file()
    assert "bit-exact: qonnx 0 mismatches, hls4ml 0 mismatches on 360 test samples" in stdout

    import mlflow

    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("pquant").experiment_id])
    assert run.data.metrics["export/mismatches"] == 0
    assert run.data.metrics["export/checked_samples"] == 360
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model.qonnx.onnx", "hls4ml.zip", "report.json"} <= artifacts


@pytest.mark.slow
def test_cli_exports_an_existing_run(exported_run):
    run_dir, _, _ = exported_run
    (run_dir / "model.qonnx.onnx").unlink()
    proc = subprocess.run([sys.executable, "-m", "pquant.export", str(run_dir), "--to", "qonnx"],
                          env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "bit-exact: qonnx 0 mismatches on 360 test samples" in proc.stdout
    assert (run_dir / "model.qonnx.onnx").is_file()


@pytest.mark.slow
def test_cli_exports_an_mlflow_run_and_logs_there(exported_run):
    import mlflow

    _, uri, _ = exported_run
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("pquant").experiment_id])
    proc = subprocess.run([sys.executable, "-m", "pquant.export", run.info.run_id, "--to",
                           "qonnx", "--tracking-uri", uri], env=_env(), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "bit-exact: qonnx 0 mismatches on 360 test samples" in proc.stdout
    history = client.get_metric_history(run.info.run_id, "export/qonnx/mismatches")
    assert len(history) == 2 and all(m.value == 0 for m in history)  # the run's and the CLI's


@pytest.mark.slow
def test_load_run_from_dir_and_mlflow_id(exported_run):
    run_dir, uri, _ = exported_run
    final = pquant.load_run(run_dir, final=True)
    trained = pquant.load_run(run_dir, final=False)
    assert not trained.fc1.finalized and final.fc1.finalized
    x = torch.randn(64, 64) * 3
    with torch.no_grad():
        expected = final(x)
        np.testing.assert_array_equal(pquant.finalize(trained)(x).numpy(), expected.numpy())
    import mlflow

    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("pquant").experiment_id])
    by_id = pquant.load_run(run.info.run_id, tracking_uri=uri)
    with torch.no_grad():
        np.testing.assert_array_equal(by_id(x).numpy(), expected.numpy())
    with pytest.raises(ConfigError, match="neither a run directory nor an MLflow run id"):
        pquant.load_run(run_dir / "missing")
    with pytest.raises(ConfigError, match=r"config.yaml does not exist"):
        pquant.load_run(run_dir.parent)


def test_mismatch_fails_loudly(tmp_path, monkeypatch):
    """A wrong export (simulated: the executor's output perturbed) fails the CLI with exit 1."""
    import pquant.export.qonnx_export as qx
    from pquant.export.check import ExportMismatch, check_exports, summary_line
    from tests.export.helpers import built_model

    model = built_model(["model=mlp"])
    real = qx.run_qonnx
    monkeypatch.setattr(qx, "run_qonnx", lambda path, x: real(path, x) + (np.arange(len(x))
                                                                          == 3)[:, None] / 16)
    metrics, _ = check_exports(model, torch.randn(20, 64), tmp_path, ["qonnx"])
    assert metrics["export/mismatches"] == 1 and metrics["export/checked_samples"] == 20
    assert summary_line(metrics).startswith("FAILED")
    assert issubclass(ExportMismatch, RuntimeError)


def test_export_without_extra_stops_before_training(tmp_path, monkeypatch):
    from pquant.runner import run

    monkeypatch.setitem(sys.modules, "qonnx", None)
    cfg = pquant.load_config(["export=qonnx", "tracking=none"])
    with pytest.raises(ConfigError, match=r"pip install torch==2.13.0 -e \"\.\[export\]\""):
        run(cfg, output_dir=str(tmp_path / "out"))
    assert not (tmp_path / "out" / "model.pt").exists()
