"""Runs of processes that are gone: SIGKILL a run and a sweep worker, the next command cleans up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from pquant.tracking.process import ProcessId

#: everything here runs in subprocesses pinned to the torch path (PQUANT_KERNELS=off), so it is
#: the same work on both CI passes: the pass with the kernels leaves it to the torch-path pass
pytestmark = pytest.mark.torch_path

LONG = ["data=synthetic", "training.epochs=100000", "training.pretraining_epochs=0",
        "training.progress=false", "pruning.epsilon=0.5"]


def _env():
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", PQUANT_KERNELS="off")
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _client(uri):
    # open_client takes the store's lock: the tests poll while a command creates the store
    from pquant.tracking.store import open_client

    return open_client(uri)


def _all_runs(uri):
    client = _client(uri)
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


def _wait_running(uri, pid, timeout=600):
    """Until process ``pid`` has a RUNNING run with metrics in the store (it is training)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            for r in _all_runs(uri):
                if r.data.tags.get("pquant.pid") == str(pid) and r.info.status == "RUNNING" \
                        and r.data.tags.get("pquant.kind") != "sweep":
                    return r.info.run_id
        except Exception:  # noqa: BLE001 - the store is still being created
            pass
        time.sleep(1)
    raise AssertionError(f"process {pid} never started a run")


# ----------------------------------------------------------------------------- units
def test_process_identity_survives_pid_reuse_and_zombies():
    me = ProcessId.current()
    assert not me.is_gone()
    assert ProcessId.parse(str(me)) == me
    assert ProcessId(me.host, me.pid, "1").is_gone()  # same PID, another start time: reused
    assert not ProcessId("another-host", 999999, None).is_gone()  # cannot tell: never gone
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    dead = ProcessId(me.host, p.pid, None)
    deadline = time.monotonic() + 60
    while not dead.is_gone() and time.monotonic() < deadline:  # a zombie until reaped
        time.sleep(0.1)
    assert dead.is_gone()
    p.wait()
    assert dead.is_gone()


def test_parent_ends_only_with_its_last_worker(tmp_path):
    from pquant.tracking.stale import join_parent, leave_parent, settle_parent, worker_key
    from pquant.tracking.store import open_client

    client = open_client(f"sqlite:///{tmp_path / 'm.db'}")
    run_id = client.create_run(client.create_experiment("e")).info.run_id
    join_parent(client, run_id)
    other = ProcessId(ProcessId.current().host, os.getppid(), None)
    client.set_tag(run_id, worker_key(other), "0 RUNNING")  # a live second worker
    assert leave_parent(client, run_id, "FINISHED") is None
    assert client.get_run(run_id).info.status == "RUNNING"
    client.set_tag(run_id, worker_key(other), "0 FAILED")  # the other one fails, last
    assert settle_parent(client, run_id, client.get_run(run_id).data.tags) == "FAILED"
    assert client.get_run(run_id).info.status == "FAILED"
    # a rerun: a new epoch of workers, the old failure no longer counts
    join_parent(client, run_id)
    assert client.get_run(run_id).info.status == "RUNNING"
    assert leave_parent(client, run_id, "FINISHED") == "FINISHED"


# ----------------------------------------------------------------------------- end to end
def test_sigkilled_run_and_sweep_worker_are_cleaned_up_by_the_next_command(tmp_path):
    import optuna

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    journal = tmp_path / "study.journal"
    sweep = ["-m", "hydra/sweeper=pquant_optuna", "hydra.sweeper.study_name=killed",
             f"hydra.sweeper.storage={journal}", "pruning.sparsity=interval(0.5,0.9)"]
    run = subprocess.Popen([sys.executable, "-m", "pquant", *LONG, f"tracking.uri={uri}"],
                           cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    worker = subprocess.Popen([sys.executable, "-m", "pquant", *sweep, *LONG,
                               "hydra.sweeper.n_trials=2", f"tracking.uri={uri}",
                               f"hydra.sweep.dir={tmp_path / 'sweep1'}"],
                              cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        run_id = _wait_running(uri, run.pid)
        child_id = _wait_running(uri, worker.pid)
    finally:
        for p in (run, worker):
            p.send_signal(signal.SIGKILL)
            p.wait()
    client = _client(uri)
    assert client.get_run(run_id).info.status == "RUNNING"  # what SIGKILL leaves behind
    # the next command against the store: continue the study, one more trial at most
    r = subprocess.run([sys.executable, "-m", "pquant", *sweep, "data=synthetic",
                        "training.epochs=1", "training.pretraining_epochs=0",
                        "training.fine_tuning_epochs=0", "training.progress=false",
                        "pruning.epsilon=0.5", "hydra.sweeper.n_trials=1",
                        "hydra.sweeper.max_trials=1", f"tracking.uri={uri}",
                        f"hydra.sweep.dir={tmp_path / 'sweep2'}"],
                       cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    for rid in (run_id, child_id):
        killed = client.get_run(rid)
        assert killed.info.status == "KILLED"
        assert "ended without closing this run" in killed.data.tags["pquant.killed"]
    parent_id = client.get_run(child_id).data.tags["mlflow.parentRunId"]
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"  # the new worker reopened and finished it
    study = optuna.load_study(study_name="killed", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))))
    states = [t.state.name for t in sorted(study.trials, key=lambda t: t.number)]
    # the killed worker's in-flight trial is FAIL and did not count toward max_trials=1
    assert states == ["FAIL", "COMPLETE"]
    parents = [x for x in _all_runs(uri) if x.data.tags.get("pquant.kind") == "sweep"]
    assert [p.info.run_id for p in parents] == [parent_id]


def test_a_plain_run_marks_a_killed_study_parent_and_trial(tmp_path):
    """The next command need not be a sweep: a plain run reaps the study's runs and trial."""
    import optuna

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    journal = tmp_path / "study.journal"
    worker = subprocess.Popen([sys.executable, "-m", "pquant", "-m",
                               "hydra/sweeper=pquant_optuna", "hydra.sweeper.study_name=k2",
                               f"hydra.sweeper.storage={journal}",
                               "pruning.sparsity=interval(0.5,0.9)", *LONG,
                               f"tracking.uri={uri}", f"hydra.sweep.dir={tmp_path / 's'}"],
                              cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        child_id = _wait_running(uri, worker.pid)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    from pquant.tracking.stale import reap_stale_runs
    from pquant.tracking.store import open_client

    reaped = reap_stale_runs(open_client(uri))  # what every run does when it opens the store
    client = _client(uri)
    parent_id = client.get_run(child_id).data.tags["mlflow.parentRunId"]
    assert set(reaped) == {child_id, parent_id}
    assert client.get_run(child_id).info.status == "KILLED"
    parent = client.get_run(parent_id)
    assert parent.info.status == "KILLED" and "pquant.killed" in parent.data.tags
    study = optuna.load_study(study_name="k2", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))))
    assert [t.state.name for t in study.trials] == ["FAIL"]


def test_compare_marks_runs_of_dead_processes_killed(tmp_path):
    from pquant.compare import load_runs
    from pquant.tracking.store import open_client

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = open_client(uri)
    exp = client.create_experiment("pquant")
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    dead = ProcessId(ProcessId.current().host, p.pid, None)
    stale = client.create_run(exp, tags=dead.tags()).info.run_id
    alive = client.create_run(exp, tags=ProcessId.current().tags()).info.run_id
    load_runs("pquant", tracking_uri=uri)
    assert client.get_run(stale).info.status == "KILLED"
    assert "ended without closing this run" in client.get_run(stale).data.tags["pquant.killed"]
    assert client.get_run(alive).info.status == "RUNNING"
