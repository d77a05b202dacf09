"""Session fixtures: a real PostgreSQL server and an MLflow tracking server backed by it."""

from __future__ import annotations

import pytest

from tests.scale.servers import MlflowServer, free_port, start_postgres


def pytest_collection_modifyitems(items):
    """Every scale-out test runs its pquant processes pinned to the torch path
    (PQUANT_KERNELS=off): the same work on both CI passes, so the pass with the kernels leaves
    them to the torch-path pass (marker ``torch_path``)."""
    for item in items:
        if item.path.parent.name == "scale":
            item.add_marker(pytest.mark.torch_path)


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
