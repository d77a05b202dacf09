"""Real servers for the scale-out tests: a throw-away PostgreSQL and an ``mlflow server``.

Both bind 127.0.0.1 on a free port and are stopped at the end of the test session. Without
PostgreSQL installed the tests that need it skip with the reason; with ``CI=true`` they fail.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing(reason: str) -> None:
    """Skip locally; fail in CI (``CI=true``), where the servers must run."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


def _as_owner(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses root: run its tools as the ``postgres`` user when we are root."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@dataclass
class Postgres:
    """A running PostgreSQL server (trust authentication, user ``postgres``)."""

    port: int
    data: Path

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create database ``name`` (if needed) and return its URL."""
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                 (name,)).fetchone()
            if not found:
                conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _run(cmd: list[str]) -> None:
    r = subprocess.run(_as_owner(cmd), capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:2])} failed: {r.stdout}{r.stderr}")


def start_postgres() -> tuple[Postgres, callable]:
    """initdb + pg_ctl start in a new temporary folder (reachable by the ``postgres`` user,
    unlike pytest's private tmp folders); returns the server and a function that stops it and
    removes the folder."""
    for tool in ("initdb", "pg_ctl"):
        if shutil.which(tool) is None:
            missing(f"PostgreSQL is not installed ({tool} not on PATH; "
                    "Debian: apt-get install postgresql)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        missing("psycopg is not installed (pip install -e '.[scale]')")
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="pquant-pg-"))
    data, sockets = root / "data", root / "sock"
    data.mkdir()
    sockets.mkdir()
    if os.geteuid() == 0:
        for path in (root, data, sockets):
            shutil.chown(path, "postgres", "postgres")
        root.chmod(0o755)
    _run(["initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync",
          "-E", "UTF8"])
    port = free_port()
    opts = (f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=200")
    _run(["pg_ctl", "-D", str(data), "-o", opts, "-l", str(root / "server.log"), "-w",
          "-t", "60", "start"])

    def stop() -> None:
        subprocess.run(_as_owner(["pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop"]),
                       capture_output=True, text=True)
        shutil.rmtree(root, ignore_errors=True)

    return Postgres(port, data), stop


@dataclass
class MlflowServer:
    """An ``mlflow server`` process on 127.0.0.1 backed by a database URL."""

    backend: str
    artifacts: Path
    port: int
    log: Path
    proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> None:
        """Start the server and wait for ``/health``."""
        from pquant.tracking.optuna_storage import sqlalchemy_url

        cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
               "--port", str(self.port), "--workers", "1",
               "--backend-store-uri", sqlalchemy_url(self.backend),
               "--artifacts-destination", str(self.artifacts)]
        env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
        self.proc = subprocess.Popen(cmd, stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server not healthy in {timeout} s: "
                           f"{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        """Stop the server (its whole process group: uvicorn/gunicorn workers too)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        import signal

        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
