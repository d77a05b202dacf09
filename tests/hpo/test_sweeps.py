"""Optuna sweeps end to end, in subprocesses, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import yaml

SMALL = ["data=synthetic", "training.epochs=2", "training.pretraining_epochs=0",
         "training.progress=false", "pruning.epsilon=0.5"]


def _sweep(tmp_path, *args, name="sweep", extra_env=None, wait=True):
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(extra_env or {})
    cmd = [sys.executable, "-m", "pquant", "-m", "hydra/sweeper=pquant_optuna", *SMALL,
           f"hydra.sweep.dir={tmp_path / name}",
           f"hydra.sweeper.storage={tmp_path / 'study.journal'}",
           f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)


def _results(tmp_path, name="sweep"):
    return yaml.safe_load((tmp_path / name / "optimization_results.yaml").read_text())


def _runs(tmp_path, experiment="pquant"):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id])


def test_single_objective_study_parent_children_and_resume(tmp_path):
    r = _sweep(tmp_path, "hydra.sweeper.n_trials=3", "pruning.sparsity=interval(0.5,0.95)",
               "hydra.sweeper.study_name=s1")
    assert r.returncode == 0, r.stderr
    res = _results(tmp_path)
    assert res["sampler"] == "TPESampler"
    assert res["trials"] == {"complete": 3, "failed": 0, "total": 3}
    assert 0.5 <= res["best"]["params"]["pruning.sparsity"] <= 0.95
    assert (tmp_path / "study.journal").is_file()
    runs = _runs(tmp_path)
    parents = [x for x in runs if x.data.tags.get("pquant.kind") == "sweep"]
    children = [x for x in runs if x.data.tags.get("pquant.kind") == "job"]
    assert len(parents) == 1 and len(children) == 3
    assert parents[0].info.status == "FINISHED"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert sorted(c.data.tags["optuna_trial"] for c in children) == ["0", "1", "2"]
    assert all("val/accuracy" in c.data.metrics for c in children)
    from mlflow.tracking import MlflowClient

    trace = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").get_metric_history(
        parents[0].info.run_id, "objective/val/accuracy")
    assert sorted(m.step for m in trace) == [0, 1, 2]
    # rerun with the same storage: the study continues (trial numbers 3..4), same parent run
    r = _sweep(tmp_path, "hydra.sweeper.n_trials=2", "pruning.sparsity=interval(0.5,0.95)",
               "hydra.sweeper.study_name=s1", name="again")
    assert r.returncode == 0, r.stderr
    assert _results(tmp_path, "again")["trials"]["total"] == 5
    runs = _runs(tmp_path)
    assert len([x for x in runs if x.data.tags.get("pquant.kind") == "sweep"]) == 1
    trials = sorted(int(x.data.tags["optuna_trial"]) for x in runs
                    if x.data.tags.get("pquant.kind") == "job")
    assert trials == [0, 1, 2, 3, 4]


def test_two_objective_nsga2_writes_the_pareto_front(tmp_path):
    r = _sweep(tmp_path, "hydra/sweeper/pquant_sampler=nsgaii", "hydra.sweeper.n_trials=4",
               "hydra.sweeper.objectives=[val/accuracy:maximize,ebops/total:minimize]",
               "pruning.sparsity=interval(0.3,0.95)", "hydra.sweeper.study_name=s2",
               "tracking=none")
    assert r.returncode == 0, r.stderr
    res = _results(tmp_path)
    assert res["sampler"] == "NSGAIISampler"
    assert res["objectives"] == {"val/accuracy": "maximize", "ebops/total": "minimize"}
    front = res["pareto_front"]
    assert front and all(set(t["values"]) == {"val/accuracy", "ebops/total"} for t in front)


def test_a_failing_trial_is_recorded_and_the_sweep_continues(tmp_path):
    # grid over two values: 1.5 is rejected by the config check, 0.6 runs
    r = _sweep(tmp_path, "hydra/sweeper/pquant_sampler=grid", "hydra.sweeper.n_trials=2",
               "pruning.sparsity=choice(1.5,0.6)", "hydra.sweeper.study_name=s3",
               "tracking=none")
    assert r.returncode == 0, r.stderr
    assert _results(tmp_path)["sampler"] == "GridSampler"
    assert _results(tmp_path)["trials"] == {"complete": 1, "failed": 1, "total": 2}
    assert "pruning.sparsity must be in [0, 1), got 1.5" in r.stdout + r.stderr


def test_too_many_failures_stop_the_sweep_with_a_clear_message(tmp_path):
    r = _sweep(tmp_path, "hydra.sweeper.n_trials=4", "pruning.sparsity=choice(1.2,1.5)",
               "hydra.sweeper.study_name=s4")
    assert r.returncode != 0
    assert "optuna sweep stopped: 2 of 2 trials failed" in r.stderr
    assert "Traceback" not in r.stderr
    assert _results(tmp_path)["trials"]["failed"] == 2
    parents = [x for x in _runs(tmp_path) if x.data.tags.get("pquant.kind") == "sweep"]
    assert parents[0].info.status == "FAILED"


def test_two_processes_share_one_study(tmp_path):
    args = ["hydra.sweeper.n_trials=3", "pruning.sparsity=interval(0.5,0.95)",
            "hydra.sweeper.study_name=shared", "tracking=none"]
    a = _sweep(tmp_path, *args, name="worker_a", wait=False)
    time.sleep(0.5)
    b = _sweep(tmp_path, *args, name="worker_b", wait=False)
    out_a, out_b = a.communicate(timeout=600), b.communicate(timeout=600)
    assert a.returncode == 0, out_a[1]
    assert b.returncode == 0, out_b[1]
    import optuna

    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "study.journal")))
    study = optuna.load_study(study_name="shared", storage=storage)
    numbers = [t.number for t in study.trials]
    assert sorted(numbers) == list(range(6))  # no duplicates, nothing lost


def test_finetuning_preset_runs_a_study(tmp_path):
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    r = subprocess.run(
        [sys.executable, "-m", "pquant", "-m", "finetuning=pdp_sparsity", *SMALL,
         "finetuning.num_trials=2", "tracking=none", f"hydra.sweep.dir={tmp_path / 'ft'}",
         f"hydra.sweeper.storage={tmp_path / 'ft.journal'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    res = yaml.safe_load((tmp_path / "ft" / "optimization_results.yaml").read_text())
    assert res["study"] == "pdp_sparsity" and res["trials"]["complete"] == 2
    assert res["sampler"] == "NSGAIISampler"
    assert "pareto_front" in res
    assert "pruning.sparsity" in res["pareto_front"][0]["params"]


@pytest.mark.parametrize("preset", ["wanda_sparsity", "hgq_beta"])
def test_other_presets_compose(compose, preset):
    from hydra.core.global_hydra import GlobalHydra

    cfg = compose([f"finetuning={preset}"])
    assert cfg.finetuning.experiment_name == preset
    GlobalHydra.instance().clear()


def test_parallel_trials_through_the_joblib_launcher(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    r = _sweep(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
               "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=2",
               "pruning.sparsity=interval(0.5,0.95)", "hydra.sweeper.study_name=par")
    assert r.returncode == 0, r.stderr
    assert _results(tmp_path)["trials"]["complete"] == 2
    children = [x for x in _runs(tmp_path) if x.data.tags.get("pquant.kind") == "job"]
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
