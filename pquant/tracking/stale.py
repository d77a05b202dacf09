"""Runs whose process is gone: found by the next command on the store and marked KILLED.

Every run carries its owner's host, PID and start time (:mod:`pquant.tracking.process`). A study's
parent run is shared by several sweep workers: each worker registers itself as a tag
``pquant.worker/<host>/<pid>/<start>`` with value ``"<epoch> <STATUS> <last seen>"``, and the
parent is ended only when no worker of the current epoch runs any more (:func:`leave_parent`).
A worker is gone when its process is dead (judged on its own host), or -- from any host -- when
it has not refreshed its ``last seen`` time (:func:`beat_parent`) for longer than the parent's
``pquant.heartbeat_grace_s`` (a lost node).

:func:`reap_stale_runs` -- called when a tracker opens a store, by sweeps and by
``pquant.compare`` -- marks RUNNING runs of dead processes on this host KILLED (with a
``pquant.killed`` tag saying why), ends study parents whose workers are all gone, and fails the
Optuna trials those processes left RUNNING.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import datetime, timezone

from pquant.tracking.process import ProcessId

log = logging.getLogger(__name__)

WORKER_PREFIX = "pquant.worker/"
EPOCH_TAG = "pquant.epoch"
KILLED_TAG = "pquant.killed"
STORAGE_TAG = "pquant.optuna_storage"
STUDY_TAG = "optuna.study"
GRACE_TAG = "pquant.heartbeat_grace_s"
_done: set[str] = set()


def worker_key(pid: ProcessId) -> str:
    return f"{WORKER_PREFIX}{pid.host}/{pid.pid}/{pid.start or '-'}"


def workers(tags: dict[str, str]) -> dict[str, tuple[ProcessId, int, str, float | None]]:
    """``tag key -> (process, epoch, status, last seen)`` of a parent run's registered workers
    (``last seen``: Unix time of the worker's last heartbeat, None if it never sent one)."""
    out = {}
    for key, value in tags.items():
        if not key.startswith(WORKER_PREFIX):
            continue
        host, _, rest = key[len(WORKER_PREFIX):].partition("/")
        pid, _, start = rest.partition("/")
        epoch, _, rest = value.partition(" ")
        status, _, seen = rest.partition(" ")
        if pid.isdigit() and epoch.isdigit():
            start = None if start in ("", "-") else start
            try:
                last = float(seen) if seen else None
            except ValueError:
                last = None
            out[key] = (ProcessId(host, int(pid), start), int(epoch), status, last)
    return out


def _lost(proc: ProcessId, seen: float | None, tags: dict[str, str]) -> bool:
    """A worker is gone: its process is dead (its own host), or its heartbeat is older than the
    parent's grace period (any host: a lost node)."""
    if proc.is_gone():
        return True
    try:
        grace = float(tags.get(GRACE_TAG, ""))
    except ValueError:
        return False
    return seen is not None and time.time() - seen > grace


def aggregate(statuses: list[str]) -> str:
    """A parent's status from its workers': FAILED if any failed, else KILLED if any was
    killed, else FINISHED."""
    for status in ("FAILED", "KILLED"):
        if status in statuses:
            return status
    return "FINISHED"


def _note() -> str:
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return f"marked KILLED by pid {os.getpid()} on {socket.gethostname()} at {stamp}"


def _set_tag(client, run_id: str, key: str, value: str) -> None:
    """``client.set_tag``, safe when another worker sets the same tag at the same moment.

    MLflow's database store writes a tag by a lookup and then an insert, so when two workers
    set the same new tag on the study's parent together, the slower insert fails on the tag's
    key ("duplicate key" / "UNIQUE constraint failed"). The tag exists by then: setting it again
    updates it.
    """
    from mlflow.exceptions import MlflowException

    for attempt in range(3):
        try:
            client.set_tag(run_id, key, value)
            return
        except MlflowException as exc:
            text = str(exc)
            if attempt == 2 or not any(m in text for m in _DUPLICATE):
                raise
            time.sleep(0.05 * (attempt + 1))


#: how a lost race to insert the same tag reads (PostgreSQL, MySQL, sqlite, SQL Server)
_DUPLICATE = ("duplicate key", "Duplicate entry", "UNIQUE constraint failed",
              "UniqueViolation", "IntegrityError")


def _delete_tag(client, run_id: str, key: str) -> None:
    """``client.delete_tag``; a tag another worker deleted first is no error."""
    from mlflow.exceptions import MlflowException

    try:
        client.delete_tag(run_id, key)
    except MlflowException:
        if key in client.get_run(run_id).data.tags:
            raise


def _kill(client, run_id: str, why: str) -> None:
    _set_tag(client, run_id, KILLED_TAG, why)
    client.set_terminated(run_id, "KILLED")


def settle_parent(client, run_id: str, tags: dict[str, str]) -> str | None:
    """Mark dead workers of the current epoch KILLED; if none still runs, end the parent.

    Returns:
        The status the parent was ended with, or None while a worker still runs.
    """
    epoch = int(tags.get(EPOCH_TAG, "0") or 0)
    current = {k: v for k, v in workers(tags).items() if v[1] == epoch}
    statuses = []
    for key, (proc, _, status, seen) in current.items():
        if status == "RUNNING" and _lost(proc, seen, tags):
            _set_tag(client, run_id, key, f"{epoch} KILLED")
            status = "KILLED"
        if status == "RUNNING":
            return None
        statuses.append(status)
    final = aggregate(statuses)
    if final == "KILLED":
        _set_tag(client, run_id, KILLED_TAG, f"every sweep worker of this study was gone; {_note()}")
    client.set_terminated(run_id, final)
    return final


def reap_stale_runs(client, *, once_key: str | None = None) -> list[str]:
    """Mark RUNNING runs whose process is gone KILLED; returns their run ids.

    Args:
        client: an ``MlflowClient``.
        once_key: if given, do nothing when a reap with this key already ran in this process.
    """
    if once_key is not None:
        if once_key in _done:
            return []
        _done.add(once_key)
    from mlflow.entities import ViewType

    reaped: list[str] = []
    studies: set[tuple[str, str]] = set()
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    for chunk in range(0, len(experiments), 100):
        token = None
        while True:
            page = client.search_runs(experiments[chunk:chunk + 100],
                                      filter_string="attributes.status = 'RUNNING'",
                                      max_results=1000, page_token=token)
            for run in page:
                tags = run.data.tags
                run_id = run.info.run_id
                if any(k.startswith(WORKER_PREFIX) for k in tags):
                    if settle_parent(client, run_id, tags) is not None:
                        reaped.append(run_id)
                        _remember_study(tags, studies)
                    continue
                owner = ProcessId.from_tags(tags)
                if owner is None or not owner.is_gone():
                    continue
                _kill(client, run_id, f"process {owner.pid} on {owner.host} ended without "
                                      f"closing this run; {_note()}")
                reaped.append(run_id)
                parent = tags.get("mlflow.parentRunId")
                if "optuna_trial" in tags and parent:
                    try:
                        _remember_study(client.get_run(parent).data.tags, studies)
                    except Exception:  # noqa: BLE001 - the parent may be gone
                        pass
            token = page.token
            if not token:
                break
    if reaped:
        log.warning("marked %d MLflow run(s) of processes that are gone KILLED: %s",
                    len(reaped), ", ".join(reaped))
    for storage, study in sorted(studies):
        from pquant.tracking.trials import fail_stale_trials_in

        fail_stale_trials_in(storage, study)
    return reaped


def _remember_study(tags: dict[str, str], studies: set[tuple[str, str]]) -> None:
    if tags.get(STORAGE_TAG) and tags.get(STUDY_TAG):
        studies.add((tags[STORAGE_TAG], tags[STUDY_TAG]))


# ----------------------------------------------------------------------------- study workers
def join_parent(client, run_id: str, grace: float | None = None) -> str:
    """Register this process as a worker of the study parent ``run_id`` (reopening it if it had
    ended: a new epoch of workers starts). Returns this worker's tag key.

    Args:
        grace: seconds without a heartbeat (:func:`beat_parent`) after which any worker may
            declare a worker of this study lost; None keeps the parent's setting.
    """
    me = ProcessId.current()
    run = client.get_run(run_id)
    tags = run.data.tags
    epoch = int(tags.get(EPOCH_TAG, "0") or 0)
    current = [w for w in workers(tags).values() if w[1] == epoch]
    live = [w for w in current if w[2] == "RUNNING" and not _lost(w[0], w[3], tags)]
    if not live and (current or run.info.status != "RUNNING"):
        epoch += 1
    key = worker_key(me)
    if grace is not None:
        _set_tag(client, run_id, GRACE_TAG, f"{grace:g}")
    _set_tag(client, run_id, key, f"{epoch} RUNNING {time.time():.0f}")
    _set_tag(client, run_id, EPOCH_TAG, str(epoch))
    if run.info.status != "RUNNING":
        if KILLED_TAG in tags:
            _delete_tag(client, run_id, KILLED_TAG)
        client.update_run(run_id, status="RUNNING")
    return key


def beat_parent(client, run_id: str) -> None:
    """Refresh this worker's ``last seen`` time on the study parent ``run_id``."""
    key = worker_key(ProcessId.current())
    mine = workers(client.get_run(run_id).data.tags).get(key)
    if mine is not None and mine[2] == "RUNNING":
        _set_tag(client, run_id, key, f"{mine[1]} RUNNING {time.time():.0f}")


def kill_trial_runs(client, parent_id: str, study: str, numbers: list[int], why: str) -> list[str]:
    """Mark the RUNNING trial runs ``numbers`` of ``study`` under ``parent_id`` KILLED (their
    worker was lost: its process cannot be checked from here); returns their run ids."""
    if not numbers:
        return []
    parent = client.get_run(parent_id)
    wanted = {str(n) for n in numbers}
    found = client.search_runs([parent.info.experiment_id],
                               filter_string=f"tags.mlflow.parentRunId = '{parent_id}' and "
                                             "attributes.status = 'RUNNING'", max_results=1000)
    killed = []
    for run in found:
        tags = run.data.tags
        if tags.get("optuna_trial") in wanted and tags.get("optuna_study") in (study, None):
            _kill(client, run.info.run_id, f"{why}; {_note()}")
            killed.append(run.info.run_id)
    return killed


def leave_parent(client, run_id: str, status: str) -> str | None:
    """Record this worker's end; the last worker of the epoch ends the parent with the
    aggregate status (:func:`aggregate`). Returns the parent's final status, or None."""
    key = worker_key(ProcessId.current())
    tags = client.get_run(run_id).data.tags
    epoch = tags.get(EPOCH_TAG, "0") or "0"
    mine = workers(tags).get(key)
    _set_tag(client, run_id, key, f"{mine[1] if mine else epoch} {status}")
    return settle_parent(client, run_id, client.get_run(run_id).data.tags)
