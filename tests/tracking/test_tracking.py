"""Runner + MLflow: finished runs with params, metrics and artifacts; failures never look done."""

from __future__ import annotations

import json

import pytest

from pquant.runner import run

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def store(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _runs(uri, experiment="pquant"):
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


def test_run_without_tracking_writes_the_report(compose, fast_overrides, tmp_path):
    report = run(compose(fast_overrides), output_dir=str(tmp_path))
    saved = json.loads((tmp_path / "report.json").read_text())
    for key in ("val/accuracy", "test/accuracy", "sparsity/global", "bits/weight/mean",
                "ebops/total", "params/total", "params/nonzero", "sparsity/fc1", "ebops/out"):
        assert key in saved
    assert saved["val/accuracy"] == report["val/accuracy"]
    assert (tmp_path / "model.pt").is_file() and (tmp_path / "config.yaml").is_file()


def test_tracked_run_is_finished_with_params_metrics_artifacts(compose, fast_overrides,
                                                               tmp_path, store):
    overrides = [o for o in fast_overrides if o != "tracking=none"]
    cfg = compose(overrides + ["tracking=mlflow", f"tracking.uri={store}",
                               "tracking.experiment_name=unit"])
    report = run(cfg, output_dir=str(tmp_path / "out"))
    (r,) = _runs(store, "unit")
    assert r.info.status == "FINISHED"
    assert r.data.params["pruning.sparsity"] == "0.8"
    assert r.data.params["training.epochs"] == "4"
    assert r.data.metrics["val/accuracy"] == pytest.approx(report["val/accuracy"])
    assert "sparsity/global" in r.data.metrics and "ebops/total" in r.data.metrics
    history = _client(store).get_metric_history(r.info.run_id, "train/loss")
    assert len(history) == 1 + 4 + 1  # one point per epoch of every stage
    artifacts = {a.path for a in _client(store).list_artifacts(r.info.run_id)}
    assert {"report.json", "config.yaml", "model.pt"} <= artifacts


def test_failed_run_is_marked_failed(compose, fast_overrides, tmp_path, store, monkeypatch):
    import pquant.runner as runner

    def boom(*args, **kwargs):
        raise RuntimeError("diverged")

    monkeypatch.setattr(runner, "train_model", boom)
    overrides = [o for o in fast_overrides if o != "tracking=none"]
    cfg = compose(overrides + [f"tracking.uri={store}"])
    with pytest.raises(RuntimeError, match="diverged"):
        run(cfg, output_dir=str(tmp_path))
    (r,) = _runs(store)
    assert r.info.status == "FAILED"


def test_interrupted_run_is_marked_killed(compose, fast_overrides, tmp_path, store, monkeypatch):
    import pquant.runner as runner

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "train_model", interrupt)
    overrides = [o for o in fast_overrides if o != "tracking=none"]
    with pytest.raises(KeyboardInterrupt):
        run(compose(overrides + [f"tracking.uri={store}"]), output_dir=str(tmp_path))
    (r,) = _runs(store)
    assert r.info.status == "KILLED"


def test_config_errors_create_no_run(compose, fast_overrides, tmp_path, store):
    from pquant import ConfigError

    overrides = [o for o in fast_overrides if o != "tracking=none"]
    cfg = compose(overrides + [f"tracking.uri={store}",
                               "pruning.disable_pruning_for_layers=[nope]"])
    with pytest.raises(ConfigError):
        run(cfg, output_dir=str(tmp_path))
    assert _runs(store) == []


def test_mlflow_is_imported_only_when_tracking_is_on():
    import subprocess
    import sys

    code = ("import sys; from pquant import load_config; from pquant.runner import run; "
            "import tempfile; d = tempfile.mkdtemp(); "
            "run(load_config(['data=synthetic','training.epochs=1','training.pretraining_epochs=0',"
            "'tracking=none','training.progress=false']), output_dir=d); "
            "print('mlflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stderr


def test_default_uri_is_absolute_under_the_start_dir(tmp_path, monkeypatch):
    from pquant.tracking.mlflow_tracker import default_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_uri() == f"sqlite:///{tmp_path.resolve() / 'outputs' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/x.db")
    assert default_uri() == "sqlite:////elsewhere/x.db"


@pytest.mark.parametrize("override, message", [
    ("training.optimizer.lr=-1", r"training.optimizer: .*Adam.* rejected the settings: "
                                 r"Invalid learning rate"),
    ("training.optimizer._target_=torch.optim.Nope", r"training.optimizer: could not build "
                                                     r"'torch.optim.Nope'"),
])
def test_optimizer_errors_come_before_the_run_exists(compose, fast_overrides, tmp_path, store,
                                                     override, message, monkeypatch):
    import pquant.runner as runner
    from pquant import ConfigError

    def never(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(runner, "train_model", never)
    overrides = [o for o in fast_overrides if o != "tracking=none"]
    with pytest.raises(ConfigError, match=message):
        run(compose(overrides + [f"tracking.uri={store}", override]), output_dir=str(tmp_path))
    assert _runs(store) == []


def test_a_bad_scheduler_is_refused_before_the_run_exists(compose, fast_overrides, tmp_path,
                                                          store):
    from pquant import ConfigError

    overrides = [o for o in fast_overrides if o != "tracking=none"]
    cfg = compose(overrides + [f"tracking.uri={store}",
                               "training.scheduler={_target_:torch.optim.lr_scheduler.StepLR,"
                               "_partial_:true,gamma:0.5}"])  # StepLR needs step_size
    with pytest.raises(ConfigError, match=r"training.scheduler: .*StepLR.* rejected"):
        run(cfg, output_dir=str(tmp_path))
    assert _runs(store) == []


def test_bad_optimizer_on_the_command_line_exits_cleanly_without_a_run(tmp_path):
    import subprocess
    import sys

    db = tmp_path / "mlflow.db"
    env = {k: v for k, v in __import__("os").environ.items() if k != "MLFLOW_TRACKING_URI"}
    r = subprocess.run([sys.executable, "-m", "pquant", "data=synthetic", "training.epochs=1",
                        "training.optimizer.lr=-1", f"tracking.uri=sqlite:///{db}"],
                       cwd=tmp_path, env=dict(env, MLFLOW_DISABLE_TELEMETRY="true",
                                              PQUANT_KERNELS="off"),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 2, r.stderr  # pquant's config-error exit status
    assert "training.optimizer" in r.stderr and "Invalid learning rate" in r.stderr
    assert "Traceback" not in r.stderr
    assert not db.exists() or _runs(f"sqlite:///{db}") == []
