"""``finetuning.model_name`` names the MLflow registered model that logged models become."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

#: everything here runs in subprocesses pinned to the torch path (PQUANT_KERNELS=off), so it is
#: the same work on both CI passes: the pass with the kernels leaves it to the torch-path pass
pytestmark = pytest.mark.torch_path


def _run(tmp_path, db, *extra):
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", PQUANT_KERNELS="off")
    env.pop("MLFLOW_TRACKING_URI", None)
    args = ["data=synthetic", "training.epochs=1", "training.pretraining_epochs=0",
            f"tracking.uri=sqlite:///{db}", *extra]
    return subprocess.run([sys.executable, "-m", "pquant", *args], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=300)


def test_logged_model_is_a_version_of_the_registered_model(tmp_path):
    from mlflow.tracking import MlflowClient

    db = tmp_path / "mlflow.db"
    for _ in range(2):
        result = _run(tmp_path, db, "finetuning.model_name=digits_mlp")
        assert result.returncode == 0, result.stderr
    result = _run(tmp_path, db, "finetuning.model_name=not_logged", "tracking.log_model=false")
    assert result.returncode == 0, result.stderr
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    assert [m.name for m in client.search_registered_models()] == ["digits_mlp"]
    versions = sorted(client.search_model_versions("name='digits_mlp'"),
                      key=lambda v: int(v.version))
    assert [v.version for v in versions] == ["1", "2"] or [int(v.version) for v in versions] \
        == [1, 2]
    runs = {r.info.run_id: r for r in client.search_runs(
        [client.get_experiment_by_name("pquant").experiment_id])}
    assert len(runs) == 3
    for version in versions:
        run = runs[version.run_id]
        assert version.source == f"{run.info.artifact_uri}/model_final.pt"
        names = [a.path for a in client.list_artifacts(run.info.run_id)]
        assert "model_final.pt" in names
