"""Optuna storages: a journal file (default) or an RDB URL, created safely by many processes."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit


def default_storage(study_name: str) -> str:
    """``<start dir>/outputs/optuna/<study>.journal``."""
    from pquant.tracking.store import start_dir

    return str(Path(start_dir()) / "outputs" / "optuna" / f"{study_name}.journal")


def local_file(target: str) -> Path | None:
    """The file behind a journal path or a ``sqlite:///`` URL (None for server databases)."""
    if "://" not in target:
        return Path(target)
    if target.startswith("sqlite:///"):
        return Path(target[len("sqlite:///"):].split("?", 1)[0])
    return None


def shareable(target: str) -> bool:
    """Whether ``target`` may be written into a tag (it holds no password)."""
    return "://" not in target or urlsplit(target).password is None


def sqlalchemy_url(target: str) -> str:
    """``postgresql://`` names SQLAlchemy's default driver, psycopg2; when only psycopg 3 is
    installed (the ``scale`` extra) the URL is pointed at it. Other URLs are returned as given."""
    scheme, sep, rest = target.partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            return f"postgresql+psycopg://{rest}"
        return f"postgresql://{rest}"
    return target


def open_storage(target: str, heartbeat: tuple[int, int] | None = None):
    """An Optuna storage for a journal file path or an RDB URL (sqlite created under a lock).

    Args:
        target: a journal file path or an RDB URL.
        heartbeat: ``(interval, grace period)`` in seconds for an RDB storage: workers record
            a heartbeat for their running trials, and a trial whose heartbeat is older than the
            grace period is failed by any other worker (a lost node). Journal files have no
            heartbeats (their workers are judged by host and PID only).
    """
    import optuna

    from pquant.tracking.store import file_lock

    beats = {} if heartbeat is None else {"heartbeat_interval": heartbeat[0],
                                          "grace_period": heartbeat[1]}
    path = local_file(target)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    if "://" in target:
        if path is None:  # a database server: PostgreSQL, MySQL
            return _server_storage(target, beats)
        with file_lock(path.with_name(path.name + ".lock")):
            return optuna.storages.RDBStorage(target, **beats)
    backend = optuna.storages.journal.JournalFileBackend(str(path))
    return optuna.storages.JournalStorage(backend)


def beats(storage) -> bool:
    """Whether ``storage`` was opened with heartbeats (:func:`open_storage`)."""
    interval = getattr(storage, "get_heartbeat_interval", None)
    return interval is not None and bool(interval())


def _server_storage(target: str, beats: dict, attempts: int = 6):
    """An RDB storage on a database server. Workers started together on a new database race
    to create Optuna's schema (the loser's ``CREATE TYPE`` fails): retried; a server that
    cannot be reached is one clear error naming the setting."""
    import time

    import optuna
    import sqlalchemy.exc

    from pquant.errors import ConfigError

    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(sqlalchemy_url(target), **beats)
        except sqlalchemy.exc.IntegrityError:  # the schema was being created by another worker
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
        except sqlalchemy.exc.OperationalError as exc:
            shown = target if shareable(target) else urlsplit(target)._replace(
                netloc=f"***@{urlsplit(target).hostname}").geturl()
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            raise ConfigError(f"hydra.sweeper.storage={shown}: the database cannot be opened "
                              f"({reason})") from None
    raise AssertionError("unreachable")
