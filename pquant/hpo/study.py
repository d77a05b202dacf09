"""What the sweeper needs from a shared Optuna study: its name, its budget, its parent run.

* :func:`default_study_name` -- a sweep without a study name gets one derived from what defines
  the study (objectives and search space), so unrelated sweeps never collide and re-running the
  same command continues the same study.
* :func:`over_budget` -- ``max_trials`` is exact with any number of workers: a trial asked beyond
  the budget (counted in the storage, after ``ask()``) is discarded.
* :func:`parent_run_id` -- one MLflow parent run per study, elected through the storage (creating
  a marker study is atomic in every Optuna storage), even when workers start together.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping

from pquant.errors import ConfigError
from pquant.training import interrupt

log = logging.getLogger(__name__)

PARENT_ATTR = "mlflow_parent_run_id"
DISCARDED_ATTR = "pquant_discarded"
PARENT_WAIT = 120.0


def default_study_name(objectives: Mapping[str, str], space: Mapping[str, object]) -> str:
    """``<parameter names>-<hash>``: the hash covers the objectives (with directions, in order)
    and every distribution of the search space."""
    key = json.dumps({"objectives": list(objectives.items()),
                      "space": {k: repr(v) for k, v in sorted(space.items())}})
    digest = hashlib.sha1(key.encode()).hexdigest()[:8]
    stem = "-".join(sorted(name.rsplit(".", 1)[-1] for name in space))[:48] or "sweep"
    return f"{stem}-{digest}"


def check_directions(study, directions: list[str], where: str) -> None:
    """A study reused with other objective directions is an error naming what to change."""
    found = [d.name.lower() for d in study.directions]
    if found != directions:
        raise ConfigError(
            f"study {study.study_name!r} in {where} was created with directions {found}, and "
            f"hydra.sweeper.objectives asks for {directions}. To start a new study set "
            "hydra.sweeper.study_name (or finetuning.experiment_name) to a new name; to "
            "continue this one use its objectives")


def counted(trials) -> int:
    """Trials that count toward ``max_trials``: every state but FAIL."""
    from optuna.trial import TrialState

    return sum(t.state is not TrialState.FAIL for t in trials)


def over_budget(study, trial, max_trials: int | None) -> bool:
    """True if ``trial`` (just asked) is beyond ``max_trials``; it is then told FAIL and marked
    discarded (so it does not count). Exact across workers: trial numbers are handed out in
    storage order, so the trials counted before this one can only shrink (by failing)."""
    if max_trials is None:
        return False
    from optuna.trial import TrialState

    before = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number]
    if counted(before) < max_trials:
        return False
    trial.set_user_attr(DISCARDED_ATTR, f"max_trials={max_trials} reached")
    study.tell(trial, state=TrialState.FAIL)
    return True


def parent_run_id(study, storage, create: Callable[[], str]) -> str:
    """The study's MLflow parent run id, created by exactly one worker.

    Args:
        study: the Optuna study.
        storage: its storage (for the marker study ``<study>.mlflow-parent``).
        create: makes a new parent run and returns its id (called by the elected worker only).
    """
    import optuna

    run_id = study.user_attrs.get(PARENT_ATTR)
    if run_id:
        return run_id
    marker = f"{study.study_name}.mlflow-parent"
    try:
        optuna.create_study(study_name=marker, storage=storage)
    except optuna.exceptions.DuplicatedStudyError:
        deadline = time.monotonic() + PARENT_WAIT
        while time.monotonic() < deadline:  # another worker is creating it
            interrupt.check()
            run_id = storage.get_study_user_attrs(study._study_id).get(PARENT_ATTR)
            if run_id:
                return run_id
            time.sleep(0.2)
        log.warning("no parent run appeared for study %r within %.0f s; creating one",
                    study.study_name, PARENT_WAIT)
    run_id = create()
    study.set_user_attr(PARENT_ATTR, run_id)
    return run_id
