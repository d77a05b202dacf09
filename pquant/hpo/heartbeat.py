"""A sweep worker's heartbeat: a daemon thread that tells the study's storage and its MLflow
parent run that this worker still lives.

Every ``interval`` seconds it records an Optuna heartbeat for each trial in flight (RDB storages
opened with heartbeats, :func:`pquant.tracking.optuna_storage.open_storage`) and refreshes the worker's
``last seen`` time on the parent run (:func:`pquant.tracking.stale.beat_parent`). Workers on other
nodes then fail the trials of a worker that stopped beating, and end the parent run without it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Heartbeat:
    """Calls ``beat`` at once and then every ``interval`` seconds until :meth:`stop`.

    A beat that raises (a database or tracking server that does not answer for a moment) is
    logged and retried at the next interval: the worker's own work is never stopped by it.
    """

    def __init__(self, interval: float, beat: Callable[[], None]) -> None:
        self.interval = float(interval)
        self._beat = beat
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _safe_beat(self) -> None:
        try:
            self._beat()
        except Exception as exc:  # noqa: BLE001 - the next beat retries
            log.debug("heartbeat failed: %s", exc)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._safe_beat()

    def start(self) -> Heartbeat:
        self._safe_beat()
        self._thread = threading.Thread(target=self._loop, name="pquant-heartbeat", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 5)
            self._thread = None

    def __enter__(self) -> Heartbeat:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
