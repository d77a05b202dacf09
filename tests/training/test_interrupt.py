"""SIGINT/SIGTERM stop a run at a batch boundary: KILLED, exit 130, one line, no traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from pquant.training import interrupt

LONG = ["data=synthetic", "training.epochs=100000", "training.pretraining_epochs=0",
        "training.progress=false", "pruning.epsilon=0.5"]


def test_the_flag_is_raised_at_the_next_check_and_restored_after():
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(interrupt.Interrupted, match="SIGINT"):
        with interrupt.handle_signals():
            os.kill(os.getpid(), signal.SIGINT)  # only recorded: no exception here
            time.sleep(0.05)
            assert interrupt.pending() == signal.SIGINT
            interrupt.check()
    assert signal.getsignal(signal.SIGINT) is before
    assert interrupt.pending() is None
    interrupt.check()  # nothing pending outside


def test_a_signal_during_training_stops_at_a_batch_boundary(compose, fast_overrides,
                                                           monkeypatch):
    import pquant.runner as runner

    calls = []
    real = runner.train_model

    def on_epoch_end(metrics, epoch):
        calls.append(epoch)
        os.kill(os.getpid(), signal.SIGTERM)  # recorded; training goes on to the next check

    def train(*args, **kwargs):
        return real(*args, **{**kwargs, "on_epoch_end": on_epoch_end})

    monkeypatch.setattr(runner, "train_model", train)
    with pytest.raises(interrupt.Interrupted, match="SIGTERM"):
        runner.run(compose(fast_overrides + ["training.epochs=50"]))
    assert calls == [0]  # the next epoch's first batch saw the flag


def _runs(uri):
    # open_client, not MlflowClient: this polls while the command is still creating the store,
    # and only open_client takes the store's lock (a bare client would migrate it at the same
    # time and leave it half-migrated)
    from pquant.tracking.store import open_client

    client = open_client(uri)
    exp = client.get_experiment_by_name("pquant")
    return client.search_runs([exp.experiment_id]) if exp else []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_the_command_stops_cleanly_on_a_signal(tmp_path, sig):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", PQUANT_KERNELS="off")
    env.pop("MLFLOW_TRACKING_URI", None)
    p = subprocess.Popen([sys.executable, "-m", "pquant", *LONG, f"tracking.uri={uri}"],
                         cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and p.poll() is None:
        try:
            if [r for r in _runs(uri) if r.info.status == "RUNNING"]:
                break
        except Exception:  # noqa: BLE001 - store being created
            pass
        time.sleep(1)
    time.sleep(1)  # in the training loop
    p.send_signal(sig)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 130, err
    assert "Traceback" not in err and "Exception ignored" not in err
    assert f"interrupted by {signal.Signals(sig).name}" in err
    (run,) = _runs(uri)
    assert run.info.status == "KILLED"


def test_an_interrupted_sweep_leaves_no_trial_running(tmp_path):
    import optuna

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    journal = tmp_path / "study.journal"
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", PQUANT_KERNELS="off")
    env.pop("MLFLOW_TRACKING_URI", None)
    p = subprocess.Popen([sys.executable, "-m", "pquant", "-m", "hydra/sweeper=pquant_optuna",
                          "hydra.sweeper.study_name=stop", f"hydra.sweeper.storage={journal}",
                          "pruning.sparsity=interval(0.5,0.9)", *LONG, f"tracking.uri={uri}",
                          f"hydra.sweep.dir={tmp_path / 's'}"],
                         cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and p.poll() is None:
        try:
            if [r for r in _runs(uri) if r.data.tags.get("pquant.kind") == "job"]:
                break
        except Exception:  # noqa: BLE001 - store being created
            pass
        time.sleep(1)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 130, err
    assert "Traceback" not in err
    runs = {r.data.tags.get("pquant.kind"): r for r in _runs(uri)}
    assert runs["job"].info.status == "KILLED" and runs["sweep"].info.status == "KILLED"
    study = optuna.load_study(study_name="stop", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))))
    assert [t.state.name for t in study.trials] == ["FAIL"]
