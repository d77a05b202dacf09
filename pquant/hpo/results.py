"""Objective values from a run's report, and the study's results as YAML."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml


def objective_values(report, objectives: Sequence[str]) -> list[float]:
    """The objective metrics of one trial's report (the dict ``python -m pquant`` returns)."""
    if not isinstance(report, Mapping):
        if len(objectives) == 1 and isinstance(report, (int, float)):
            return [float(report)]
        raise ValueError(f"the run returned {type(report).__name__}, not a report of metrics")
    values = []
    for name in objectives:
        if name not in report:
            known = sorted(k for k, v in report.items() if isinstance(v, (int, float)))
            raise KeyError(f"objective {name!r} is not in the run's report; available: {known}")
        value = float(report[name])
        if math.isnan(value):
            raise ValueError(f"objective {name!r} is NaN")
        values.append(value)
    return values


def _trial(t, objectives: Sequence[str]) -> dict:
    return {"number": t.number, "params": dict(t.params),
            "values": dict(zip(objectives, t.values))}


def write_results(study, path: Path, objectives: Sequence[str], sampler: str = "") -> dict:
    """Best trial (one objective) or Pareto front (several) of ``study``, written to ``path``.

    Trials discarded because ``max_trials`` was reached are left out of the counts."""
    from optuna.trial import TrialState

    from pquant.hpo.study import DISCARDED_ATTR

    every = study.get_trials(deepcopy=False)
    trials = [t for t in every if DISCARDED_ATTR not in t.user_attrs]  # beyond max_trials
    complete = [t for t in trials if t.state is TrialState.COMPLETE]
    result = {
        "study": study.study_name,
        "sampler": sampler,
        "objectives": dict(zip(objectives, [d.name.lower() for d in study.directions])),
        "trials": {"complete": len(complete),
                   "failed": sum(t.state is TrialState.FAIL for t in trials),
                   "total": len(trials)},
    }
    if complete:
        if len(objectives) == 1:
            result["best"] = _trial(study.best_trial, objectives)
        else:
            front = sorted(study.best_trials, key=lambda t: t.number)
            result["pareto_front"] = [_trial(t, objectives) for t in front]
    path.write_text(yaml.safe_dump(result, sort_keys=False))
    return result
