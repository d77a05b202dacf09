"""Resumable runs: a run killed (SIGKILL) mid-training and resumed ends exactly like an
uninterrupted one -- same report, same weights, same MLflow run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pquant.training.checkpoint import CHECKPOINT_NAME, load_checkpoint

SCHEDULE = ["data=synthetic", "data.n_samples=800", "training.pretraining_epochs=2",
            "training.epochs=16", "training.fine_tuning_epochs=2", "training.batch_size=32",
            "training.progress=false", "training.checkpoint_every=2"]
EPOCHS = 20
CASES = {
    "pdp-fixed": ["pruning=pdp", "pruning.epsilon=0.125", "quantization=fixed"],
    "wanda": ["pruning=wanda", "pruning.t_start_collecting_batch=0", "pruning.t_delta=30"],
    "hgq": ["pruning=pdp", "pruning.epsilon=0.125", "quantization=hgq"],
}


def _cmd(args):
    return [sys.executable, "-m", "pquant", *args]


def _env():
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _run(args, cwd):
    return subprocess.run(_cmd(args), cwd=cwd, capture_output=True, text=True, env=_env(),
                          timeout=600)


def _kill_after_first_checkpoint(args, cwd, run_dir: Path) -> int:
    """Start a run, SIGKILL it as soon as it has written a checkpoint; the epochs it reached."""
    proc = subprocess.Popen(_cmd(args), cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=_env())
    try:
        deadline = time.monotonic() + 300
        while not (run_dir / CHECKPOINT_NAME).exists():
            assert proc.poll() is None, "the run ended before writing a checkpoint"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "report.json").exists(), "killed too late: the run had finished"
    return int(load_checkpoint(run_dir / CHECKPOINT_NAME)["driver"]["global_epoch"])


@pytest.mark.parametrize("case", list(CASES))
def test_killed_and_resumed_run_equals_uninterrupted(tmp_path, case):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    base = SCHEDULE + CASES[case] + [f"tracking.uri={uri}"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"

    # the uninterrupted reference runs in this process (one interpreter start less)
    from pquant import load_config
    from pquant.runner import run

    run(load_config(base), output_dir=str(whole))
    reached = _kill_after_first_checkpoint(base + [f"hydra.run.dir={killed}"], tmp_path, killed)
    assert 2 <= reached < EPOCHS
    resumed = _run([f"training.resume={killed}", f"hydra.run.dir={tmp_path / 'second'}"],
                   tmp_path)
    assert resumed.returncode == 0, resumed.stderr

    want = json.loads((whole / "report.json").read_text())
    got = json.loads((killed / "report.json").read_text())
    assert got == want
    for name in ("model.pt", "model_final.pt"):
        a = torch.load(whole / name, weights_only=True)
        b = torch.load(killed / name, weights_only=True)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}: {key} differs"

    # the resumed run continued the killed run's MLflow run: two runs in all, both finished,
    # with the same per-epoch history
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("pquant").experiment_id])
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    run_id = load_checkpoint(killed / CHECKPOINT_NAME)["mlflow_run_id"]
    other = next(r for r in runs if r.info.run_id != run_id)

    def history(rid):
        return {m.step: m.value for m in client.get_metric_history(rid, "val/accuracy")}

    assert history(run_id) == history(other.info.run_id)
    assert len(history(run_id)) == EPOCHS + 1  # every epoch and the final report


def test_resume_of_finished_run_is_a_clear_message(tmp_path):
    run_dir = tmp_path / "run"
    args = ["data=synthetic", "training.epochs=2", "training.pretraining_epochs=0",
            "pruning.epsilon=0.5", "tracking=none", "training.checkpoint_every=1",
            "training.progress=false"]
    assert _run(args + [f"hydra.run.dir={run_dir}"], tmp_path).returncode == 0
    again = _run([f"training.resume={run_dir}"], tmp_path)
    assert again.returncode != 0
    assert "already finished" in again.stderr and "Traceback" not in again.stderr
    missing = _run([f"training.resume={tmp_path / 'nowhere'}"], tmp_path)
    assert missing.returncode != 0 and "no such directory" in missing.stderr


def test_checkpoint_is_weights_only_and_atomic(tmp_path):
    from pquant.training.checkpoint import save_atomic

    path = tmp_path / CHECKPOINT_NAME
    save_atomic({"format": 1, "x": torch.ones(2), "nested": {"a": [1, 2.0, "s", None]}}, path)
    state = load_checkpoint(path)
    assert torch.equal(state["x"], torch.ones(2)) and state["nested"]["a"] == [1, 2.0, "s", None]
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME]  # no temporary left
