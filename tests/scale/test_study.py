"""Three sweep workers on one PostgreSQL study and one MLflow server, as on three nodes; one is
SIGKILLed mid-trial and restarted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

SMALL = ["data=synthetic", "training.epochs=2", "training.pretraining_epochs=0",
         "training.progress=false", "pruning.epsilon=0.5"]
OBJECTIVES = "hydra.sweeper.objectives=[val/accuracy:maximize,ebops/total:minimize]"


def worker_cmd(storage: str, sweep_dir, *extra: str) -> list[str]:
    """One worker, exactly as the README's "Scale out" chapter runs it."""
    return [sys.executable, "-m", "pquant", "-m", "hydra/sweeper=pquant_optuna",
            "hydra/sweeper/pquant_sampler=random", *SMALL, OBJECTIVES,
            "pruning.sparsity=interval(0.5,0.95)", "hydra.sweeper.study_name=scale3",
            f"hydra.sweeper.storage={storage}", f"hydra.sweep.dir={sweep_dir}", *extra]


def worker_env(tracking_uri: str) -> dict[str, str]:
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", PQUANT_KERNELS="off",
               MLFLOW_TRACKING_URI=tracking_uri)
    return env


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_three_workers_one_postgres_study_kill_and_restart(postgres, mlflow_server, tmp_path):
    import optuna
    from mlflow.tracking import MlflowClient

    from pquant.tracking.optuna_storage import open_storage

    storage = postgres.create_database("study_three_workers")
    env = worker_env(mlflow_server.uri)
    # two trials per invocation, six in the study: workers 0 and 1 run four, the restarted
    # worker the last two. The victim's trials are long (epochs), so that the SIGKILL lands
    # mid-trial whatever the machine's load: a 2-epoch trial could end between seeing it RUNNING
    # and the signal.
    budget = ["hydra.sweeper.n_trials=2", "hydra.sweeper.max_trials=6"]
    logs = [(tmp_path / f"w{i}.log").open("w") for i in range(4)]
    long = ["training.epochs=100000"]
    procs = [subprocess.Popen(worker_cmd(storage, tmp_path / f"w{i}", *budget, *(long if i == 2 else [])),
                              cwd=tmp_path, env=env, stdout=logs[i], stderr=subprocess.STDOUT)
             for i in range(3)]  # started together: they race to create the study's tables
    victim = procs[2]
    client = MlflowClient(tracking_uri=mlflow_server.uri)

    def victim_run():
        assert victim.poll() is None, (tmp_path / "w2.log").read_text()
        for exp in client.search_experiments():
            runs = client.search_runs([exp.experiment_id],
                                      f"tags.`pquant.pid` = '{victim.pid}' and "
                                      "attributes.status = 'RUNNING'")
            if runs:
                return runs[0]
        return None

    try:
        # mid-trial: its trial RUNNING in the study and its MLflow run started
        killed_run = _wait(victim_run, 600, "the victim's MLflow trial run")
        study = optuna.load_study(study_name="scale3", storage=open_storage(storage))
        mine = [t for t in study.get_trials(deepcopy=False)
                if t.state.name == "RUNNING"
                and f"|{victim.pid}:" in str(t.user_attrs.get("pquant_worker"))]
        assert len(mine) == 1
        killed_trial = mine[0].number
        assert killed_run.data.tags["optuna_trial"] == str(killed_trial)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        for p in procs[:2]:  # the others go on and finish
            assert p.wait(timeout=900) == 0, (tmp_path / f"w{procs.index(p)}.log").read_text()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    study = optuna.load_study(study_name="scale3", storage=open_storage(storage))
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == 4
    # restart the killed worker (the README's command): it resumes the study up to max_trials.
    # (Workers 0 and 1 may have finished before the kill; then this one finds the lost trial.)
    restart = subprocess.run(worker_cmd(storage, tmp_path / "w2-again", *budget), cwd=tmp_path,
                             env=env, stdout=logs[3], stderr=subprocess.STDOUT, timeout=900)
    assert restart.returncode == 0, (tmp_path / "w3.log").read_text()
    study = optuna.load_study(study_name="scale3", storage=open_storage(storage))
    states = {t.number: t.state.name for t in study.trials}
    assert states[killed_trial] == "FAIL"  # not RUNNING forever
    assert "RUNNING" not in states.values()
    assert client.get_run(killed_run.info.run_id).info.status == "KILLED"
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    counted = [t for t in study.trials if t.state.name != "FAIL"]
    assert len(counted) == 6 and all(t.state.name == "COMPLETE" for t in counted)
    # MLflow: one parent for the study, every trial run its child, none left RUNNING
    exp = client.get_experiment_by_name("pquant")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("pquant.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("pquant.kind") == "job"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.tags["pquant.heartbeat_grace_s"] == "120"  # 4 x 30 s heartbeats
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    finished = sorted(int(c.data.tags["optuna_trial"]) for c in children
                      if c.info.status == "FINISHED")
    assert finished == sorted(t.number for t in counted)
    assert all(c.info.status in ("FINISHED", "KILLED") for c in children)
    # the restarted worker's results file covers the whole study
    res = yaml.safe_load((tmp_path / "w2-again" / "optimization_results.yaml").read_text())
    assert res["trials"]["complete"] == 6 and res["trials"]["failed"] >= 1
    front = res["pareto_front"]
    assert front and {t["number"] for t in front} <= set(finished)
    assert all(set(t["values"]) == {"val/accuracy", "ebops/total"} for t in front)
