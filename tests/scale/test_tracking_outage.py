"""The MLflow server goes away mid-run: the run neither hangs nor silently loses metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.scale.servers import MlflowServer, free_port

EPOCHS = 200  # long enough that the first epoch is seen well before the run ends
RUN = ["data=synthetic", f"training.epochs={EPOCHS}", "training.pretraining_epochs=0",
       "training.fine_tuning_epochs=0", "training.progress=false", "pruning.epsilon=0.5"]


@pytest.fixture
def own_server(postgres, tmp_path):
    """An MLflow server of this test only (it is stopped and restarted on the same port)."""
    server = MlflowServer(postgres.create_database(f"mlflow_{tmp_path.name[:40].lower()}"),
                          tmp_path / "artifacts", free_port(), tmp_path / "server.log")
    server.start()
    yield server
    server.stop()


def _start_run(server, tmp_path, catchup: str):
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", PQUANT_KERNELS="off",
               MLFLOW_TRACKING_URI=server.uri, PQUANT_TRACKING_CATCHUP_S=catchup)
    return subprocess.Popen([sys.executable, "-m", "pquant", *RUN,
                             f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _freeze_after_first_epoch(server, proc) -> str:
    """Freeze the run (SIGSTOP) once its first epoch's metrics reached the server; its id.

    The run is frozen *before* each look at the server and let go again only when the look
    finds nothing yet, so however fast the machine, the run cannot end between the moment its
    first epoch is seen and the outage the caller starts (the caller sends SIGCONT).
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=server.uri)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        proc.send_signal(signal.SIGSTOP)
        exp = client.get_experiment_by_name("pquant")
        if exp is not None:
            runs = client.search_runs([exp.experiment_id], f"tags.`pquant.pid` = '{proc.pid}'")
            if runs and client.get_metric_history(runs[0].info.run_id, "train/loss"):
                assert runs[0].info.status == "RUNNING", "the run ended before the outage"
                return runs[0].info.run_id
        proc.send_signal(signal.SIGCONT)
        time.sleep(0.2)
    raise AssertionError("the run's first metrics never reached the server")


def _stop_server_mid_run(server, proc) -> str:
    """Stop the server while the run is certainly still training; the run's id."""
    run_id = _freeze_after_first_epoch(server, proc)
    try:
        server.stop()
    finally:
        proc.send_signal(signal.SIGCONT)
    return run_id


@pytest.mark.slow
def test_server_down_mid_run_then_back_catches_up(own_server, tmp_path):
    from mlflow.tracking import MlflowClient

    proc = _start_run(own_server, tmp_path, "300")
    try:
        run_id = _stop_server_mid_run(own_server, proc)
        time.sleep(8)  # training goes on while the server is down
        own_server.start()
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    client = MlflowClient(tracking_uri=own_server.uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    steps = sorted(m.step for m in client.get_metric_history(run_id, "train/loss"))
    assert steps == sorted(set(steps)) and len(steps) == EPOCHS  # every epoch, once
    assert "val/accuracy" in run.data.metrics


@pytest.mark.slow
def test_server_gone_for_good_fails_the_run_clearly(own_server, tmp_path):
    proc = _start_run(own_server, tmp_path, "5")
    try:
        _stop_server_mid_run(own_server, proc)
        out, _ = proc.communicate(timeout=600)  # bounded: never hangs
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert "did not answer for 5 s (PQUANT_TRACKING_CATCHUP_S)" in out, out
    assert "not recorded" in out and "Traceback" not in out
    assert (tmp_path / "run").is_dir()
