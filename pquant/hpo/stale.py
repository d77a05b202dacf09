"""Optuna trials of dead workers (kept here for existing imports; the code is
:mod:`pquant.tracking.trials`, beside the MLflow runs it reaps with them)."""

from __future__ import annotations

from pquant.tracking.trials import (
    WORKER_ATTR,
    fail_lost_trials,
    fail_stale_trials,
    fail_stale_trials_in,
)

__all__ = ["WORKER_ATTR", "fail_lost_trials", "fail_stale_trials", "fail_stale_trials_in"]
