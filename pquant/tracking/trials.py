"""Optuna trials left RUNNING by a sweep worker that is gone (SIGKILL, OOM, node loss).

The sweeper stores its process (:class:`pquant.tracking.process.ProcessId`) on every trial it
asks, as the user attribute ``pquant_worker``. A later sweep on the study, or any command that
finds the worker's MLflow runs dead, fails those trials: they end FAIL, and FAIL trials do not
count toward ``max_trials``. On an RDB storage the workers also record Optuna heartbeats for
their running trials (:class:`pquant.hpo.heartbeat.Heartbeat`): a trial whose heartbeat is older
than the grace period is failed by any worker, on any host (:func:`fail_lost_trials`).
"""

from __future__ import annotations

import logging
import warnings

from pquant.tracking.process import ProcessId

log = logging.getLogger(__name__)

WORKER_ATTR = "pquant_worker"


def fail_stale_trials(study) -> list[int]:
    """Set RUNNING trials of ``study`` whose worker process is gone to FAIL; their numbers."""
    from optuna.trial import TrialState

    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = ProcessId.parse(str(trial.user_attrs.get(WORKER_ATTR, "")))
        if owner is None or not owner.is_gone():
            continue
        try:
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except Exception as exc:  # noqa: BLE001 - finished meanwhile
            log.debug("trial %d: %s", trial.number, exc)
            continue
        failed.append(trial.number)
    if failed:
        log.warning("study %r: trial(s) %s were left RUNNING by a worker that is gone; "
                    "marked FAIL", study.study_name, failed)
    return failed


def fail_lost_trials(study) -> list[int]:
    """Fail RUNNING trials whose worker stopped sending heartbeats for longer than the storage's
    grace period (a lost node; only storages opened with heartbeats); their numbers."""
    import optuna
    from optuna.trial import TrialState

    from pquant.tracking.optuna_storage import beats

    if not beats(study._storage):
        return []
    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    if not running:
        return []
    with warnings.catch_warnings():  # experimental since Optuna 2.9, stable in practice
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    lost = sorted(t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                  if t.number in running)
    if lost:
        log.warning("study %r: trial(s) %s sent no heartbeat for longer than the grace period "
                    "(their worker or its node was lost); marked FAIL", study.study_name, lost)
    return lost


def fail_stale_trials_in(storage: str, study_name: str) -> list[int]:
    """:func:`fail_stale_trials` for a study given by storage and name (errors are logged)."""
    try:
        import optuna

        from pquant.tracking.optuna_storage import open_storage

        study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
        return fail_stale_trials(study)
    except Exception as exc:  # noqa: BLE001 - best effort from a command that is not a sweep
        log.warning("could not check study %r in %s for stale trials: %s", study_name, storage,
                    exc)
        return []
