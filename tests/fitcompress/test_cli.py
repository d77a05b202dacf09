"""``python -m pquant fitcompress=on`` end to end: report, MLflow, the YAML artifact reused,
multiruns over the goal, and the ``finetuning=fitcompress_goal`` preset."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import yaml

SMALL = ["data=synthetic", "training.epochs=2", "training.pretraining_epochs=1",
         "training.progress=false", "pruning.epsilon=0.5", "fitcompress=on",
         "fitcompress.fisher_batches=4", "fitcompress.fisher_min_batches=4"]


def _run(tmp_path, *args, timeout=600):
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "pquant", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_run_reports_the_search_and_the_yaml_is_reusable(tmp_path):
    r = _run(tmp_path, *SMALL, "fitcompress.optimize_pruning=true",
             "fitcompress.compression_goal=0.12", f"hydra.run.dir={tmp_path / 'run'}",
             f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}")
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    for key in ("fitcompress/nodes_expanded", "fitcompress/fisher_evaluations",
                "fitcompress/path_cost", "fitcompress/compression", "fitcompress/search_time_s",
                "fitcompress/reached", "compression/weights"):
        assert key in report, key
    assert report["fitcompress/reached"] == 1.0
    assert report["fitcompress/compression"] <= 0.12
    assert "fitcompress goal 0.12 reached" in r.stdout
    # the summary table shows the chosen bits
    chosen = {k.split("/")[-1]: v for k, v in report.items() if k.startswith("fitcompress/bits/")}
    assert chosen
    for layer, bits in chosen.items():
        assert report[f"bits/weight/{layer}"] == bits
    # MLflow: the trace as metrics and the YAML as an artifact
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.search_runs([client.get_experiment_by_name("pquant").experiment_id])[0]
    assert run.data.metrics["fitcompress/nodes_expanded"] == report["fitcompress/nodes_expanded"]
    assert "fitcompress.yaml" in [a.path for a in client.list_artifacts(run.info.run_id)]
    # reuse: the YAML as a config bundle, FITCompress off, same weight formats
    chosen_yaml = tmp_path / "reuse" / "experiment" / "chosen.yaml"
    chosen_yaml.parent.mkdir(parents=True)
    shutil.copy(tmp_path / "run" / "fitcompress.yaml", chosen_yaml)
    again = _run(tmp_path, "--config-dir", str(tmp_path / "reuse"), "+experiment=chosen",
                 *SMALL[:-3], "tracking=none", f"hydra.run.dir={tmp_path / 'again'}")
    assert again.returncode == 0, again.stderr
    resolved = yaml.safe_load((tmp_path / "again" / "config.yaml").read_text())
    entries = yaml.safe_load(chosen_yaml.read_text())["quantization"]["layer_specific"]
    assert resolved["quantization"]["layer_specific"] == entries
    report2 = json.loads((tmp_path / "again" / "report.json").read_text())
    for layer, bits in chosen.items():
        assert report2[f"bits/weight/{layer}"] == bits


def test_unreachable_goal_is_a_warning_not_a_crash(tmp_path):
    r = _run(tmp_path, *SMALL, "fitcompress.compression_goal=0.01",
             "fitcompress.quantization_schedule=[6]", "tracking=none",
             f"hydra.run.dir={tmp_path / 'run'}")
    assert r.returncode == 0, r.stderr
    assert "NOT reached" in r.stdout and "WARNING" in r.stdout
    out = r.stdout + r.stderr  # (Hydra's log handler writes to stdout)
    assert out.index("cannot be reached") < out.index("pquant summary")  # before training went on
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["fitcompress/reached"] == 0.0
    assert any("fitcompress.compression_goal" in w for w in report["warnings"])


def test_multirun_sweeps_goal_and_lambda(tmp_path):
    r = _run(tmp_path, "-m", *SMALL, "fitcompress.compression_goal=0.2,0.1",
             "fitcompress.f_lambda=0.5", "tracking=none", f"hydra.sweep.dir={tmp_path / 'm'}")
    assert r.returncode == 0, r.stderr
    reports = sorted((tmp_path / "m").glob("*/report.json"))
    assert len(reports) == 2
    sizes = {json.loads(p.read_text())["fitcompress/goal"]: json.loads(p.read_text())[
        "fitcompress/compression"] for p in reports}
    assert sizes[0.2] <= 0.2 and sizes[0.1] <= 0.1


def test_fitcompress_goal_preset_runs_an_optuna_study(tmp_path):
    r = _run(tmp_path, "-m", "finetuning=fitcompress_goal", *SMALL[:-3],
             "fitcompress.fisher_batches=4", "fitcompress.fisher_min_batches=4",
             "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={tmp_path / 's'}",
             f"hydra.sweeper.storage={tmp_path / 'study.journal'}",
             f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}")
    assert r.returncode == 0, r.stderr
    res = yaml.safe_load((tmp_path / "s" / "optimization_results.yaml").read_text())
    assert res["trials"]["complete"] == 2
    goals = [json.loads(p.read_text())["fitcompress/goal"]
             for p in (tmp_path / "s").glob("*/report.json")]
    assert len(goals) == 2 and all(0.03 <= g <= 0.25 for g in goals)
