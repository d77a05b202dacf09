"""The MLflow store: created safely by concurrent processes, checked before any work is done."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

TINY = ["data=synthetic", "training.epochs=1", "training.pretraining_epochs=0",
        "training.fine_tuning_epochs=1", "training.progress=false", "pruning.epsilon=0.5"]
#: config errors exit with pquant's config-error status (not 0, not 130, no traceback)
CONFIG_EXIT = (2,)  # every configuration error exits 2


def _env(**extra):
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", PQUANT_KERNELS="off")
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(extra)
    return env


def _start(args, cwd, **env):
    return subprocess.Popen([sys.executable, "-m", "pquant", *args], cwd=cwd, env=_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _runs(uri):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    return [r for e in client.search_experiments()
            for r in client.search_runs([e.experiment_id])]


def test_three_runs_started_together_on_a_new_store_all_finish(tmp_path):
    procs = [_start(TINY, tmp_path) for _ in range(3)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    db = tmp_path / "outputs" / "mlflow.db"
    runs = _runs(f"sqlite:///{db}")
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}
    con = sqlite3.connect(db)
    tables = [n for (n,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    assert not [t for t in tables if t.startswith("_alembic_tmp_")]
    # default run folders are unique per process, even when started in the same second
    reports = list((tmp_path / "outputs" / "runs").glob("*/*/report.json"))
    assert len(reports) == 3


def _break(db: Path) -> None:
    """Leave the store as a migration race does: a leftover batch-migration table."""
    from pquant.tracking.store import open_client

    client = open_client(f"sqlite:///{db}")
    exp = client.create_experiment("kept")
    client.create_run(exp, run_name="precious")
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE _alembic_tmp_runs AS SELECT * FROM runs")
    con.commit()
    con.close()


def test_a_half_migrated_store_is_refused_with_the_repair_command(tmp_path):
    from pquant.tracking.store import StoreError, main, open_client

    db = tmp_path / "mlflow.db"
    _break(db)
    uri = f"sqlite:///{db}"
    with pytest.raises(StoreError, match="half-migrated") as info:
        open_client(uri)
    assert f"python -m pquant.tracking.store repair {uri}" in str(info.value)
    assert main(["repair", uri]) == 0
    assert (tmp_path / "mlflow.db.bak").is_file()
    (run,) = _runs(uri)
    assert run.info.run_name == "precious"  # nothing lost
    open_client(uri)  # usable again


def test_the_repair_restores_a_table_whose_swap_was_interrupted(tmp_path):
    from pquant.tracking.store import open_client, repair

    db = tmp_path / "mlflow.db"
    _break(db)
    con = sqlite3.connect(db)
    con.execute("PRAGMA foreign_keys=OFF")
    con.execute("DROP TABLE runs")  # crashed between DROP and RENAME
    con.commit()
    con.close()
    repair(f"sqlite:///{db}")
    (run,) = _runs(f"sqlite:///{db}")
    assert run.info.run_name == "precious"
    open_client(f"sqlite:///{db}")


def test_a_run_refuses_a_half_migrated_store_before_training(tmp_path):
    db = tmp_path / "mlflow.db"
    _break(db)
    r = subprocess.run([sys.executable, "-m", "pquant", *TINY, f"tracking.uri=sqlite:///{db}"],
                       cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode in CONFIG_EXIT, r.stderr
    assert "half-migrated" in r.stderr and "Traceback" not in r.stderr
    assert len(_runs(f"sqlite:///{db}")) == 1  # only the one made by _break


def test_a_store_mlflow_cannot_migrate_is_one_clear_message(tmp_path):
    """What a concurrent foreign migration or a newer MLflow leaves: no alembic traceback."""
    from pquant.tracking.store import open_client

    db = tmp_path / "mlflow.db"
    open_client(f"sqlite:///{db}")
    con = sqlite3.connect(db)
    con.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")
    con.commit()
    con.close()
    r = subprocess.run([sys.executable, "-m", "pquant", *TINY, f"tracking.uri=sqlite:///{db}"],
                       cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode in CONFIG_EXIT, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert f"cannot open the MLflow store {db}" in r.stderr and "ffffffffffff" in r.stderr
    assert "tracking.uri" in r.stderr


# ----------------------------------------------------------------------------- pre-checks
def test_check_store_unit(tmp_path):
    from pquant.tracking.store import StoreError, check_store

    check_store(f"sqlite:///{tmp_path / 'a' / 'b.db'}", "tracking.uri")
    assert (tmp_path / "a").is_dir()
    with pytest.raises(StoreError, match=r"tracking.uri=sqlite:////proc/x/mlflow.db"):
        check_store("sqlite:////proc/x/mlflow.db", "tracking.uri")
    start = time.monotonic()
    with pytest.raises(StoreError, match=r"MLFLOW_TRACKING_URI=http://127.0.0.1:9.*cannot be "
                                         r"reached"):
        check_store("http://127.0.0.1:9", "MLFLOW_TRACKING_URI")
    assert time.monotonic() - start < 60  # bounded (never a retry loop)


@pytest.mark.parametrize("setting", ["env", "uri"])
def test_unusable_tracking_store_fails_fast_with_one_message(tmp_path, setting):
    if setting == "env":
        args, env, name = TINY, {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}, \
            "MLFLOW_TRACKING_URI=http://127.0.0.1:9"
    else:
        args, env, name = TINY + ["tracking.uri=sqlite:////proc/x/mlflow.db"], {}, \
            "tracking.uri=sqlite:////proc/x/mlflow.db"
    r = subprocess.run([sys.executable, "-m", "pquant", *args], cwd=tmp_path, env=_env(**env),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode in CONFIG_EXIT, r.stderr
    assert name in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "outputs" / "runs").exists() or \
        not list((tmp_path / "outputs" / "runs").glob("*/*/report.json"))
