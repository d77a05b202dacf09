"""Opening an MLflow store safely: reachable, writable, created by one process at a time.

* :func:`check_store` runs before anything else in a run or sweep: an unreachable server or an
  unwritable sqlite path is one clear :class:`StoreError` within a few seconds, naming the setting
  that chose the URI.
* :func:`open_client` serialises the creation/migration of a local sqlite store across processes
  (``fcntl.flock`` on ``<db>.lock``): several ``python -m pquant`` started together in a new
  directory would otherwise race in MLflow's schema migrations and leave the store half-migrated.
* A store that *was* left half-migrated (leftover ``_alembic_tmp_*`` tables, or a schema version
  that is not MLflow's head) is refused with the repair command, ``python -m pquant.tracking.store
  repair <uri>``, which keeps a backup and loses no runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from pquant.errors import ConfigError

#: seconds to wait for a tracking server to accept a connection
PROBE_TIMEOUT = 3.0
#: seconds to wait for another process creating the same store
LOCK_TIMEOUT = 300.0
_DEFAULT_PORTS = {"http": 80, "https": 443, "postgresql": 5432, "mysql": 3306, "mssql": 1433}


class StoreError(ConfigError):
    """The tracking store cannot be used (unreachable, unwritable or half-migrated)."""


def start_dir() -> Path:
    """The directory the command was started from (Hydra 1.3 with ``chdir: false`` keeps it)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.cwd).resolve()
    except ValueError:
        return Path(os.getcwd()).resolve()


def sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///...`` URI (None for other stores and in-memory sqlite)."""
    if uri.startswith("sqlite:///") and uri != "sqlite:///:memory:":
        return Path(uri[len("sqlite:///"):].split("?", 1)[0])
    return None


@contextlib.contextmanager
def file_lock(path: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """An exclusive inter-process lock on ``path`` (created if needed; a no-op without fcntl)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StoreError(f"waited {timeout:.0f} s for the lock {path} held by another "
                                     "process; if no pquant process runs, delete it") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


# ----------------------------------------------------------------------------- pre-checks
def check_store(uri: str, setting: str) -> None:
    """Fail fast, with one message naming ``setting``, if the store at ``uri`` cannot be used.

    Args:
        uri: the tracking URI about to be used.
        setting: what chose it (``tracking.uri``, ``MLFLOW_TRACKING_URI``, ...), for the message.

    Raises:
        StoreError: the server does not answer within :data:`PROBE_TIMEOUT` seconds, or the
            sqlite file or its folder cannot be created or written.
    """
    path = sqlite_path(uri)
    if path is not None:
        _check_writable(path, f"{setting}={uri}")
        return
    parts = urlsplit(uri)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme == "file":
        _check_writable(Path(parts.path) / "x", f"{setting}={uri}")
        return
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return  # databricks, uc, ...: nothing we can probe cheaply
    port = parts.port or _DEFAULT_PORTS[scheme]
    try:
        with socket.create_connection((parts.hostname, port), timeout=PROBE_TIMEOUT):
            pass
    except OSError as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
        raise StoreError(f"{setting}={uri}: the tracking store at {parts.hostname}:{port} cannot "
                         f"be reached ({reason} within {PROBE_TIMEOUT:.0f} s). Start the server, "
                         f"fix {setting}, or use tracking=none") from None


def _check_writable(path: Path, what: str) -> None:
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"{what}: cannot create the folder {folder} ({exc.strerror or exc}); "
                         "choose a writable path or use tracking=none") from None
    target = path if path.exists() else folder
    if not os.access(target, os.W_OK) or (path.exists() and not os.access(path, os.R_OK)):
        raise StoreError(f"{what}: {target} is not writable; choose a writable path or use "
                         "tracking=none")


# ----------------------------------------------------------------------------- opening
def _half_migrated(path: Path) -> str | None:
    """Why the sqlite store at ``path`` is half-migrated, or None if it is new or healthy."""
    if not path.is_file() or path.stat().st_size == 0:
        return None
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        tables = {name for (name,) in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "alembic_version" not in tables:
            return None  # not (yet) an MLflow store: MLflow decides
        leftovers = sorted(t for t in tables if t.startswith("_alembic_tmp_"))
        (version,) = con.execute("SELECT version_num FROM alembic_version").fetchone() or (None,)
    finally:
        con.close()
    if not leftovers:
        return None
    problems = [f"leftover tables {', '.join(leftovers)}"]
    try:
        from mlflow.store.db.utils import _get_latest_schema_revision

        head = _get_latest_schema_revision()
    except Exception:  # noqa: BLE001 - only for the message
        head = version
    if version != head:
        problems.append(f"schema version {version}, expected {head}")
    return "; ".join(problems) or None


def open_client(uri: str):
    """An ``MlflowClient`` on ``uri``, its store created/migrated under an inter-process lock.

    Raises:
        StoreError: the local sqlite store is half-migrated (with the repair command).
    """
    from mlflow.tracking import MlflowClient

    path = sqlite_path(uri)
    if path is None:
        return MlflowClient(tracking_uri=uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.with_name(path.name + ".lock")):
        problem = _half_migrated(path)
        if problem:
            raise StoreError(
                f"the MLflow store {path} was left half-migrated ({problem}), most likely by "
                "several processes creating it at once. Its runs are intact. Repair it with "
                f"`python -m pquant.tracking.store repair {uri}` (it keeps a copy in "
                f"{path.name}.bak), or point tracking.uri at another file")
        try:
            with _quiet_migrations():  # (a config error later must stay one line on stderr)
                client = MlflowClient(tracking_uri=uri)
                client._tracking_client.store  # noqa: B018 - creates and migrates it, locked
        except Exception as exc:  # noqa: BLE001 - alembic/sqlalchemy errors: one clear message
            raise StoreError(_unopenable(path, uri, exc)) from None
    return client


def _unopenable(path: Path, uri: str, exc: Exception) -> str:
    """Why MLflow could not create or migrate the sqlite store, and what to do."""
    import mlflow

    problem = _half_migrated(path)
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return (f"cannot open the MLflow store {path}: {type(exc).__name__}: {first}"
            + (f" (it is half-migrated: {problem})" if problem else "")
            + ". Another program (an `mlflow ui`, a script with its own MlflowClient) may have "
            "been creating or upgrading it at the same time: run the command again. A store "
            f"written by a newer MLflow needs that version (this is MLflow {mlflow.__version__}). "
            f"`python -m pquant.tracking.store repair {uri}` finishes an interrupted migration "
            f"(it keeps a copy in {path.name}.bak); or point tracking.uri at another file")


@contextlib.contextmanager
def _quiet_migrations() -> Iterator[None]:
    """Silence MLflow's and alembic's INFO lines about creating and migrating a store."""
    loggers = [logging.getLogger(name) for name in
               ("mlflow.store.db.utils", "alembic", "alembic.runtime.migration")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


# ----------------------------------------------------------------------------- repair
def repair(uri: str) -> Path:
    """Finish a half-migrated sqlite store; returns the backup's path.

    Leftover ``_alembic_tmp_<t>`` tables are dropped when ``<t>`` exists (the copy was not yet
    swapped in) and renamed to ``<t>`` otherwise (the original was already dropped), then MLflow's
    migrations run to the head revision.
    """
    path = sqlite_path(uri)
    if path is None or not path.is_file():
        raise StoreError(f"{uri} is not an existing sqlite store")
    backup = path.with_name(path.name + ".bak")
    with file_lock(path.with_name(path.name + ".lock")):
        shutil.copy2(path, backup)
        con = sqlite3.connect(str(path))
        try:
            tables = {n for (n,) in con.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            for tmp in sorted(t for t in tables if t.startswith("_alembic_tmp_")):
                original = tmp[len("_alembic_tmp_"):]
                if original in tables:
                    con.execute(f'DROP TABLE "{tmp}"')
                else:
                    con.execute(f'ALTER TABLE "{tmp}" RENAME TO "{original}"')
            con.commit()
        finally:
            con.close()
        import sqlalchemy
        from mlflow.store.db.utils import _upgrade_db

        engine = sqlalchemy.create_engine(f"sqlite:///{path}")
        try:
            _upgrade_db(engine)
        finally:
            engine.dispose()
    return backup


def main(argv: list[str] | None = None) -> int:
    """``python -m pquant.tracking.store repair <sqlite uri>``."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "repair":
        sys.stderr.write("usage: python -m pquant.tracking.store repair sqlite:///<path>\n")
        return 2
    try:
        backup = repair(argv[1])
    except StoreError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    print(f"repaired {argv[1]} (copy of the original in {backup})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
