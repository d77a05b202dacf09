"""Regression: task resolution, metrics, the run's report and summary, compare and a sweep."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from pquant.errors import ConfigError
from tests.data.make_files import linear, write

RUN = ["training.epochs=3", "training.pretraining_epochs=1", "training.progress=false",
       "pruning.epsilon=0.5", "tracking=none", "training.optimizer.lr=0.01"]


def test_regression_metrics_match_scikit_learn():
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    from pquant.data.loader import TensorLoader
    from pquant.metrics.accuracy import evaluate

    torch.manual_seed(0)
    x = torch.randn(103, 4)
    y = torch.randn(103, 2) * torch.tensor([1.0, 5.0]) + 3
    model = torch.nn.Linear(4, 2)
    got = evaluate(model, TensorLoader(x, y, 10), torch.nn.MSELoss())
    with torch.no_grad():
        pred = model(x).numpy()
    assert got["mse"] == pytest.approx(mean_squared_error(y.numpy(), pred), rel=1e-6)
    assert got["mae"] == pytest.approx(mean_absolute_error(y.numpy(), pred), rel=1e-6)
    assert got["r2"] == pytest.approx(r2_score(y.numpy(), pred), rel=1e-6)
    assert got["loss"] == pytest.approx(got["mse"], rel=1e-5)
    assert "accuracy" not in got


@pytest.mark.parametrize("overrides, task", [
    ([], "classification"),
    (["data=synthetic_regression"], "regression"),
    (["training.task=regression"], "regression"),
    (["+training.loss._target_=torch.nn.HuberLoss"], "regression"),
    (["+training.loss._target_=torch.nn.CrossEntropyLoss"], "classification"),
])
def test_task_comes_from_the_setting_the_loss_or_the_data(compose, overrides, task):
    from pquant.training.task import configured_task, default_objective

    cfg = compose(["data=synthetic", *overrides])
    assert (configured_task(cfg) or "classification") == task
    assert default_objective(cfg) == ("val/mse:minimize" if task == "regression"
                                      else "val/accuracy:maximize")


@pytest.mark.parametrize("overrides", [
    ["data=synthetic_regression", "training.task=classification"],
    ["data=synthetic_regression", "+training.loss._target_=torch.nn.CrossEntropyLoss"],
    ["training.task=classification", "+training.loss._target_=torch.nn.MSELoss"],
])
def test_contradicting_task_settings_are_refused(compose, overrides):
    from pquant.training.task import configured_task

    with pytest.raises(ConfigError, match="the task is ambiguous"):
        configured_task(compose(overrides))


def test_bad_task_value_is_refused(compose):
    from pquant.config.sections import sections

    with pytest.raises(ConfigError, match="training.task must be one of"):
        sections(compose(["training.task=ranking"]))


def test_synthetic_regression_run_reports_regression_metrics(compose, tmp_path, capsys):
    from pquant.runner import run

    report = run(compose(["data=synthetic_regression", *RUN]), output_dir=str(tmp_path))
    assert report["task"] == "regression"
    for key in ("val/mse", "val/mae", "val/r2", "test/mse", "test/mae", "test/r2"):
        assert np.isfinite(report[key])
    assert not any("accuracy" in k for k in report)
    assert report["test/r2"] > 0.5  # a linear target, learned
    out = capsys.readouterr().out
    assert "mse          test" in out and "r2" in out and "accuracy" not in out
    saved = yaml.safe_load((tmp_path / "report.json").read_text())
    assert saved["val/mse"] == report["val/mse"]


def test_regression_with_the_default_loss_equals_explicit_mse(compose, tmp_path):
    from pquant.runner import run

    a = run(compose(["data=synthetic_regression", *RUN]), output_dir=str(tmp_path / "a"))
    b = run(compose(["data=synthetic_regression", *RUN,
                     "+training.loss._target_=torch.nn.MSELoss"]),
            output_dir=str(tmp_path / "b"))
    assert a["test/mse"] == b["test/mse"]


def test_huber_on_a_generated_file_with_float_targets(compose, tmp_path):
    from pquant.runner import run

    x, y = linear(400, 6)
    path = write("csv", tmp_path, x, y, label="energy")
    report = run(compose(["data=files", f"data.path={path}", "data.label=energy", *RUN,
                          "+training.loss._target_=torch.nn.HuberLoss"]),
                 output_dir=str(tmp_path / "run"))
    assert report["task"] == "regression" and "classes" not in report
    assert report["test/r2"] > 0.5


def test_regression_task_refuses_class_only_data(compose, tmp_path):
    from pquant.runner import run

    with pytest.raises(ConfigError, match="the task is ambiguous"):
        run(compose(["data=synthetic", "data.task=classification", "training.task=regression",
                     *RUN]), output_dir=str(tmp_path))


def test_summary_shows_regression_metrics():
    from pquant.metrics.summary import format_summary

    report = {"val/mse": 0.25, "test/mse": 0.5, "val/mae": 0.4, "test/mae": 0.6,
              "val/r2": 0.9, "test/r2": 0.8, "sparsity/global": 0.5,
              "bits/weight/mean": 8.0, "bits/activation/mean": 8.0, "ebops/total": 10.0,
              "bops/total": 20.0, "size/bits": 8192.0, "params/total": 10,
              "params/nonzero": 5}
    text = format_summary(report, "t", [], [])
    assert "  mse          test 0.5000   val 0.2500" in text
    assert "  r2           test 0.8000   val 0.9000" in text
    assert "accuracy" not in text


def test_compare_uses_r2_for_regression_runs(tmp_path):
    from mlflow.tracking import MlflowClient

    from pquant.compare import compare

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("reg", artifact_location=(tmp_path / "art").as_uri())
    for method, r2, mse, ebops in (("pdp", 0.9, 0.1, 1000.0), ("wanda", 0.8, 0.2, 500.0),
                                   ("cs", 0.7, 0.3, 2000.0)):
        run = client.create_run(exp, tags={"choice.pruning": method})
        for key, value in (("test/r2", r2), ("test/mse", mse), ("ebops/total", ebops)):
            client.log_metric(run.info.run_id, key, value)
        client.set_terminated(run.info.run_id, "FINISHED")
    table, _ = compare("reg", tmp_path / "out", tracking_uri=uri)
    text = table.read_text()
    assert "| pruning | runs | test/r2" in text
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("|")}
    assert "0.9000" in rows["pdp"] and rows["pdp"].rstrip().endswith("yes |")
    assert not rows["cs"].rstrip().endswith("yes |")


def test_a_sweep_on_regression_minimises_val_mse_by_default(tmp_path):
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "pquant", "-m", "hydra/sweeper=pquant_optuna",
           "data=synthetic_regression", "training.epochs=2", "training.pretraining_epochs=0",
           "training.progress=false", "pruning.epsilon=0.5", "hydra.sweeper.n_trials=2",
           "pruning.sparsity=interval(0.3,0.6)", f"hydra.sweep.dir={tmp_path / 'sweep'}",
           f"hydra.sweeper.storage={tmp_path / 'study.journal'}", "tracking=none"]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    res = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert res["objectives"] == {"val/mse": "minimize"}
    assert res["trials"]["complete"] == 2
    assert np.isfinite(res["best"]["values"]["val/mse"])
