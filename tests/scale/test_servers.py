"""The fixtures' servers are real: PostgreSQL answers SQL, the MLflow server stores runs in it."""

from __future__ import annotations


def test_postgres_serves_optuna_storage(postgres):
    import optuna

    from pquant.tracking.optuna_storage import open_storage

    url = postgres.create_database("optuna_fixture")
    assert url.startswith("postgresql://postgres@127.0.0.1:")
    study = optuna.create_study(study_name="fixture", storage=open_storage(url))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    again = optuna.load_study(study_name="fixture", storage=open_storage(url))
    assert len(again.trials) == 2


def test_mlflow_server_keeps_runs_in_postgres(mlflow_server):
    import psycopg
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.uri)
    exp = client.create_experiment("fixture-check")
    run = client.create_run(exp)
    client.log_metric(run.info.run_id, "m", 1.5, step=3)
    client.set_terminated(run.info.run_id)
    with psycopg.connect(mlflow_server.backend) as conn:
        row = conn.execute("SELECT value, step FROM metrics WHERE run_uuid = %s",
                           (run.info.run_id,)).fetchone()
    assert row == (1.5, 3)


def test_unreachable_postgres_storage_is_one_clear_error():
    import pytest

    pytest.importorskip("psycopg")
    from pquant.errors import ConfigError
    from pquant.tracking.optuna_storage import open_storage
    from tests.scale.servers import free_port

    url = f"postgresql://someone:secret@127.0.0.1:{free_port()}/db"
    with pytest.raises(ConfigError) as err:
        open_storage(url)
    assert str(err.value).startswith("hydra.sweeper.storage=postgresql://***@127.0.0.1")
    assert "secret" not in str(err.value)
