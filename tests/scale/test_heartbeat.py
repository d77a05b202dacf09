"""A worker lost with its node: its process cannot be checked from another host, so the other
workers judge it by its heartbeats (real PostgreSQL and MLflow servers)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from pquant.tracking.process import ProcessId

#: a worker on another host: its PID means nothing here
FAR = ProcessId("far-node.example", 4242, None)


def test_trial_of_a_lost_node_fails_after_the_grace_period(postgres):
    import optuna

    from pquant.tracking.optuna_storage import open_storage
    from pquant.tracking.trials import WORKER_ATTR, fail_lost_trials, fail_stale_trials

    url = postgres.create_database("heartbeat")
    storage = open_storage(url, heartbeat=(1, 4))  # (margins of 4 s for a loaded CI)
    study = optuna.create_study(study_name="lost-node", storage=storage)
    far, here = study.ask(), study.ask()
    far.set_user_attr(WORKER_ATTR, str(FAR))
    here.set_user_attr(WORKER_ATTR, str(ProcessId.current()))
    storage.record_heartbeat(far._trial_id)
    assert fail_stale_trials(study) == [] and fail_lost_trials(study) == []  # beating
    time.sleep(2.5)
    storage.record_heartbeat(here._trial_id)  # this one keeps beating, the far one stopped
    time.sleep(2.5)  # the far one is silent for 5 s > 4
    storage.record_heartbeat(here._trial_id)
    assert fail_stale_trials(study) == []  # the far PID cannot be judged from here
    assert fail_lost_trials(study) == [far.number]
    states = {t.number: t.state.name for t in study.get_trials()}
    assert states == {far.number: "FAIL", here.number: "RUNNING"}
    # a storage opened without heartbeats never fails anything by time
    plain = optuna.load_study(study_name="lost-node", storage=open_storage(url))
    assert fail_lost_trials(plain) == []


def test_parent_run_and_trial_runs_of_a_lost_node_are_ended(mlflow_server):
    from mlflow.tracking import MlflowClient

    from pquant.tracking import stale

    client = MlflowClient(tracking_uri=mlflow_server.uri)
    exp = client.create_experiment(f"heartbeat-{os.getpid()}-{time.time_ns()}")
    parent = client.create_run(exp, tags={"pquant.kind": "sweep"}).info.run_id
    child = client.create_run(exp, tags={"mlflow.parentRunId": parent, "optuna_trial": "3",
                                         "optuna_study": "s"}).info.run_id
    other = client.create_run(exp, tags={"mlflow.parentRunId": parent, "optuna_trial": "4",
                                         "optuna_study": "s"}).info.run_id
    stale.join_parent(client, parent, grace=4)
    epoch = client.get_run(parent).data.tags[stale.EPOCH_TAG]
    client.set_tag(parent, stale.worker_key(FAR), f"{epoch} RUNNING {time.time():.0f}")
    assert stale.leave_parent(client, parent, "FINISHED") is None  # the far worker still beats
    assert client.get_run(parent).info.status == "RUNNING"
    time.sleep(5)
    # any command on the store (here: the reaper every tracker runs) ends the parent now
    assert parent in stale.reap_stale_runs(client)
    run = client.get_run(parent)
    assert run.info.status == "KILLED"
    assert run.data.tags[stale.worker_key(FAR)].startswith(f"{epoch} KILLED")
    assert stale.kill_trial_runs(client, parent, "s", [3], "lost") == [child]
    assert client.get_run(child).info.status == "KILLED"
    assert "lost" in client.get_run(child).data.tags[stale.KILLED_TAG]
    assert client.get_run(other).info.status == "RUNNING"


def test_heartbeat_settings_are_checked(tmp_path):
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", PQUANT_KERNELS="off")
    r = subprocess.run([sys.executable, "-m", "pquant", "-m", "hydra/sweeper=pquant_optuna",
                        "hydra.sweeper.heartbeat_interval=10", "hydra.sweeper.grace_period=5",
                        "pruning.sparsity=interval(0.5,0.9)", "tracking=none",
                        f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "hydra.sweeper.grace_period a larger one" in r.stderr, r.stderr
    assert "heartbeat_interval=10 grace_period=5" in r.stderr
    assert "Traceback" not in r.stderr
