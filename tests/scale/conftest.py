"""Session fixtures: a real PostgreSQL server and an MLflow tracking server backed by it."""

from __future__ import annotations

import pytest

from tests.scale.servers import MlflowServer, free_port, start_postgres


@pytest.fixture(scope="session")
def postgres():
    """A throw-away PostgreSQL server on a free 127.0.0.1 port (stopped after the session)."""
    server, stop = start_postgres()
    try:
        yield server
    finally:
        stop()


@pytest.fixture(scope="session")
def mlflow_server(postgres, tmp_path_factory):
    """``mlflow server`` on 127.0.0.1, backed by the PostgreSQL database ``mlflow``."""
    root = tmp_path_factory.mktemp("mlflow-server")
    server = MlflowServer(postgres.create_database("mlflow"), root / "artifacts", free_port(),
                          root / "server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()
