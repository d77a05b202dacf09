"""MLflow tracker (the only module, with ``hydra_callback``, that imports mlflow -- lazily)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path

from hydra.errors import CompactHydraException

from pquant.errors import ConfigError
from pquant.tracking.base import Tracker
from pquant.tracking.process import ProcessId
from pquant.tracking.store import start_dir

log = logging.getLogger(__name__)

MAX_PARAM_VALUE = 6000
FLUSH_SECONDS = 2.0
#: an MLflow server that stops answering: each request gives up after this many seconds and
#: retries (defaults for ``MLFLOW_HTTP_REQUEST_TIMEOUT`` / ``..._MAX_RETRIES`` /
#: ``..._BACKOFF_FACTOR``, set only when the user has not; MLflow's own allow minutes per call)
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
#: how long the end of a run waits for an unreachable tracking store to come back
#: (``PQUANT_TRACKING_CATCHUP_S``) before it fails with :class:`TrackingLost`
CATCHUP_SECONDS = 300.0


class TrackingLost(CompactHydraException, RuntimeError):
    """The tracking store stayed unreachable at the end of a run: metrics were not recorded."""


def catchup_seconds() -> float:
    """``PQUANT_TRACKING_CATCHUP_S`` (seconds, >= 0) or :data:`CATCHUP_SECONDS`."""
    text = os.environ.get("PQUANT_TRACKING_CATCHUP_S")
    if text is None:
        return CATCHUP_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0:
        raise ConfigError(f"PQUANT_TRACKING_CATCHUP_S must be a number of seconds >= 0, "
                          f"got {text!r}")
    return value
#: the finalised model the runner logs; with ``model_name`` it becomes a registered-model version
FINAL_MODEL_FILE = "model_final.pt"


def default_uri(directory: str | Path | None = None) -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else an absolute sqlite store in ``<start dir>/outputs``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    base = Path(directory or start_dir()).resolve() / "outputs"
    return f"sqlite:///{base / 'mlflow.db'}"


def _local_db_dir(uri: str) -> Path | None:
    from pquant.tracking.store import sqlite_path

    path = sqlite_path(uri)
    return path.parent if path is not None else None


def uri_setting(explicit: str | None) -> str:
    """The setting that chose the tracking URI, for messages."""
    if not explicit and os.environ.get("MLFLOW_TRACKING_URI"):
        return "MLFLOW_TRACKING_URI"
    return "tracking.uri"


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


class MlflowTracker(Tracker):
    """Records runs in MLflow through ``MlflowClient`` (no global active-run state)."""

    enabled = True

    def __init__(self, experiment_name: str = "pquant", uri: str | None = None,
                 run_name: str | None = None, log_model: bool = True,
                 tags: Mapping[str, str] | None = None, model_name: str | None = None) -> None:
        super().__init__(experiment_name, uri, run_name, log_model, tags, model_name)
        self.tracking_uri = uri or default_uri()
        self._client = None
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self._pending: list = []
        self._last_flush = 0.0
        self._outage: float | None = None  # when the store stopped answering
        if self.tracking_uri.startswith(("http://", "https://")):
            for key, value in HTTP_DEFAULTS.items():
                os.environ.setdefault(key, value)

    # ------------------------------------------------------------------ plumbing
    def check(self) -> None:
        """Raise :class:`pquant.tracking.store.StoreError` within seconds if the store cannot be
        reached, written or opened (called before any data or model is built); opening it
        creates it (serialised across processes) and reaps runs of dead processes."""
        from pquant.tracking.store import check_store

        check_store(self.tracking_uri, uri_setting(self.uri))
        self.client  # noqa: B018 - open now: a half-migrated store fails here, not after training

    @property
    def client(self):
        """The client; the first use creates the store (locked) and reaps runs of dead
        processes (once per process and store)."""
        if self._client is None:
            from pquant.tracking.stale import reap_stale_runs
            from pquant.tracking.store import open_client

            client = open_client(self.tracking_uri)
            reap_stale_runs(client, once_key=self.tracking_uri)
            self._client = client
        return self._client

    def _experiment(self) -> str:
        if self.experiment_id is None:
            from mlflow.exceptions import MlflowException

            found = self.client.get_experiment_by_name(self.experiment_name)
            if found is not None:
                self.experiment_id = found.experiment_id
            else:
                db_dir = _local_db_dir(self.tracking_uri)
                location = (db_dir / "mlartifacts").as_uri() if db_dir is not None else None
                try:
                    self.experiment_id = self.client.create_experiment(
                        self.experiment_name, artifact_location=location)
                except MlflowException:  # created concurrently by another process
                    found = self.client.get_experiment_by_name(self.experiment_name)
                    if found is None:
                        raise
                    self.experiment_id = found.experiment_id
        return self.experiment_id

    def _flush(self) -> None:
        """Send the buffered metrics. While the store does not answer they stay buffered and
        training goes on (one warning); they are sent when it answers again."""
        try:
            self._send()
        except Exception as exc:  # noqa: BLE001 - server down or slow: keep them, retry later
            if self._outage is None:
                self._outage = time.monotonic()
                log.warning("the tracking store %s does not answer (%s); metrics are kept and "
                            "sent when it is back", self.tracking_uri, _reason(exc))
        else:
            if self._outage is not None:
                log.warning("the tracking store %s answers again after %.0f s; buffered metrics "
                            "sent", self.tracking_uri, time.monotonic() - self._outage)
                self._outage = None
        self._last_flush = time.monotonic()

    def _send(self) -> None:
        while self._pending and self.run_id is not None:
            chunk = self._pending[:1000]
            self.client.log_batch(self.run_id, metrics=chunk)
            del self._pending[:len(chunk)]

    def _patiently(self, action, what: str, patience: float | None = None):
        """``action()``, retried while the store does not answer, for up to ``patience``
        seconds (default :func:`catchup_seconds`); then :class:`TrackingLost` naming what was
        not recorded."""
        patience = catchup_seconds() if patience is None else patience
        deadline = time.monotonic() + patience
        while True:
            try:
                return action()
            except Exception as exc:  # noqa: BLE001
                if time.monotonic() >= deadline:
                    raise TrackingLost(
                        f"the tracking store {self.tracking_uri} did not answer for "
                        f"{patience:.0f} s (PQUANT_TRACKING_CATCHUP_S) at the end of "
                        f"run {self.run_id}: {what} not recorded ({_reason(exc)}). The run "
                        "folder holds the report and model; the next command on the store "
                        "marks the run KILLED") from None
                if self._outage is None:
                    self._outage = time.monotonic()
                    log.warning("the tracking store %s does not answer (%s); retrying for up "
                                "to %.0f s", self.tracking_uri, _reason(exc), patience)
                time.sleep(2.0)

    # ------------------------------------------------------------------ single run
    def start(self, *, run_name: str, params: Mapping[str, str], tags: Mapping[str, str],
              parent_run_id: str | None = None) -> None:
        from mlflow.entities import Param

        if self.resume_run_id:  # training.resume: the same run continues
            self.run_id = self.resume_run_id
            self.client.update_run(self.run_id, status="RUNNING")
            self._last_flush = time.monotonic()
            return
        all_tags = dict(tags)
        all_tags.update(ProcessId.current().tags())
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(self._experiment(), run_name=self.run_name or run_name,
                                     tags=all_tags)
        self.run_id = run.info.run_id
        plist = [Param(k, str(v)[:MAX_PARAM_VALUE]) for k, v in params.items()]
        for chunk in _chunks(plist, 100):
            self.client.log_batch(self.run_id, params=chunk)
        self._last_flush = time.monotonic()

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending.extend(Metric(k, float(v), now, step or 0) for k, v in metrics.items())
        if time.monotonic() - self._last_flush > FLUSH_SECONDS:
            self._flush()

    def flush(self) -> None:
        self._flush()

    def log_artifact(self, path: str | Path) -> None:
        self._patiently(lambda: self.client.log_artifact(self.run_id, str(path)),
                        f"artifact {Path(path).name}")
        if self.log_model and self.model_name and Path(path).name == FINAL_MODEL_FILE:
            self._register(Path(path).name)

    def _register(self, artifact: str) -> None:
        """A new version of registered model ``model_name`` pointing at this run's artifact."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(self.model_name)
        except MlflowException:  # exists already (or created concurrently)
            if self.client.get_registered_model(self.model_name) is None:
                raise
        run = self.client.get_run(self.run_id)
        version = self.client.create_model_version(
            self.model_name, source=f"{run.info.artifact_uri}/{artifact}", run_id=self.run_id)
        log.info("registered model '%s' version %s", self.model_name, version.version)

    def end(self, status: str = "FINISHED") -> None:
        if self.run_id is None:
            return
        # a finished run waits for the store to come back; a failed or killed one does not
        # (its own error is what the user must see)
        patience = None if status == "FINISHED" else 0.0
        try:
            self._patiently(self._send, f"{len(self._pending)} metric value(s)", patience)
            self._patiently(lambda: self.client.set_terminated(self.run_id, status),
                            f"the run's end ({status})", patience)
        except TrackingLost as exc:
            if status == "FINISHED":
                raise
            log.error("%s", exc)

    def describe(self) -> str | None:
        if self.run_id is None:
            return None
        return (f"MLflow run {self.run_id} in experiment '{self.experiment_name}' at "
                f"{self.tracking_uri}")

    def ui_command(self) -> str:
        return f"mlflow ui --backend-store-uri {self.tracking_uri}"

    # ------------------------------------------------------------------ sweeps
    def start_parent(self, *, run_name: str, tags: Mapping[str, str],
                     owned: bool = True) -> str | None:
        """A parent run; ``owned``: this process's liveness decides it (plain multiruns), else
        its registered workers do (studies, :mod:`pquant.tracking.stale`)."""
        all_tags = dict(tags)
        if owned:
            all_tags.update(ProcessId.current().tags())
        run = self.client.create_run(self._experiment(), run_name=run_name, tags=all_tags)
        return run.info.run_id

    def end_parent(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status)

    def join_parent(self, run_id: str, grace: float | None = None) -> None:
        from pquant.tracking.stale import join_parent

        join_parent(self.client, run_id, grace)

    def leave_parent(self, run_id: str, status: str = "FINISHED") -> str | None:
        from pquant.tracking.stale import leave_parent

        return leave_parent(self.client, run_id, status)

    def log_parent_metrics(self, run_id: str, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, step)
                                               for k, v in metrics.items()])


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
