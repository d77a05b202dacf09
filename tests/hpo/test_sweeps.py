"""Optuna sweeps end to end, in subprocesses, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys

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


def _sweep_cmd(tmp_path, *args):
    return [sys.executable, "-m", "pquant", "-m", "hydra/sweeper=pquant_optuna", *SMALL,
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", *args]


def _env():
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", PQUANT_KERNELS="off")
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def test_two_workers_share_one_study_budget_and_parent(tmp_path):
    """Two worker processes started together on one study: exactly max_trials trials count,
    one parent run, ended FINISHED by the last worker; default sweep folders differ."""
    args = ["hydra.sweeper.n_trials=3", "hydra.sweeper.max_trials=4",
            "pruning.sparsity=interval(0.5,0.95)", "hydra.sweeper.study_name=shared",
            f"hydra.sweeper.storage={tmp_path / 'study.journal'}"]
    procs = [subprocess.Popen(_sweep_cmd(tmp_path, *args), cwd=tmp_path, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    import optuna

    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "study.journal")))
    study = optuna.load_study(study_name="shared", storage=storage)
    counted = [t for t in study.trials if t.state.name != "FAIL"]
    assert len(counted) == 4 and all(t.state.name == "COMPLETE" for t in counted)
    assert all("pquant_discarded" in t.user_attrs for t in study.trials
               if t.state.name == "FAIL")
    runs = _runs(tmp_path)
    parents = [x for x in runs if x.data.tags.get("pquant.kind") == "sweep"]
    children = [x for x in runs if x.data.tags.get("pquant.kind") == "job"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 4
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    workers = [k for k in parents[0].data.tags if k.startswith("pquant.worker/")]
    assert len(workers) == 2
    assert {parents[0].data.tags[k] for k in workers} == {"0 FINISHED"}
    sweep_dirs = list((tmp_path / "outputs" / "multirun").glob("*/*"))
    assert len(sweep_dirs) == 2


def test_sweeps_without_a_study_name_do_not_collide(tmp_path):
    """The README's examples in order: one objective, then two, no study name given."""
    base = ["hydra.sweeper.n_trials=1", "tracking=none"]
    first = subprocess.run(_sweep_cmd(tmp_path, *base, "pruning.sparsity=interval(0.5,0.95)",
                                      f"hydra.sweep.dir={tmp_path / 'a'}"),
                           cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    second = subprocess.run(_sweep_cmd(
        tmp_path, *base, "hydra/sweeper/pquant_sampler=nsgaii",
        "hydra.sweeper.objectives=[val/accuracy:maximize,ebops/total:minimize]",
        "pruning.sparsity=interval(0.5,0.97)", f"hydra.sweep.dir={tmp_path / 'b'}"),
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    a, b = _results(tmp_path, "a")["study"], _results(tmp_path, "b")["study"]
    assert a != b and a.startswith("sparsity-") and b.startswith("sparsity-")
    assert f"hydra.sweeper.study_name={a}" in first.stdout + first.stderr  # how to continue
    # reusing the first study with the second's objectives names the setting to change
    third = subprocess.run(_sweep_cmd(
        tmp_path, *base, f"hydra.sweeper.study_name={a}",
        "hydra.sweeper.objectives=[val/accuracy:maximize,ebops/total:minimize]",
        "pruning.sparsity=interval(0.5,0.95)", f"hydra.sweep.dir={tmp_path / 'c'}"),
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert third.returncode != 0
    assert (tmp_path / "outputs" / "optuna" / f"{a}.journal").is_file()  # default storage
    assert "hydra.sweeper.study_name" in third.stderr and "directions" in third.stderr
    assert "Traceback" not in third.stderr


def test_default_study_name_depends_on_objectives_and_space():
    from optuna.distributions import FloatDistribution

    from pquant.hpo.study import default_study_name

    space = {"pruning.sparsity": FloatDistribution(0.5, 0.95)}
    one = default_study_name({"val/accuracy": "maximize"}, space)
    assert one == default_study_name({"val/accuracy": "maximize"}, dict(space))
    assert one != default_study_name({"val/accuracy": "minimize"}, space)
    assert one != default_study_name({"val/accuracy": "maximize"},
                                     {"pruning.sparsity": FloatDistribution(0.5, 0.9)})


def test_the_sweeper_does_not_take_the_official_plugin_names():
    from hydra.core.config_store import ConfigStore

    import hydra_plugins.pquant_optuna_sweeper.config  # noqa: F401 - registers

    repo = ConfigStore.instance().repo["hydra"]["sweeper"]
    assert "pquant_optuna.yaml" in repo
    assert "optuna.yaml" not in repo or repo["optuna.yaml"].provider != "pquant"
    assert "sampler" not in repo or all(n.provider != "pquant"
                                        for n in repo["sampler"].values())
    assert set(repo["pquant_sampler"]) == {f"{n}.yaml" for n in
                                           ("tpe", "random", "grid", "nsgaii", "cmaes")}


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
