"""Optuna storages (kept here for existing imports; the code is :mod:`pquant.tracking.optuna_storage`,
beside the MLflow store: the trackers reap dead workers' trials too)."""

from __future__ import annotations

from pquant.tracking.optuna_storage import (
    default_storage,
    local_file,
    open_storage,
    shareable,
    sqlalchemy_url,
)

__all__ = ["default_storage", "local_file", "open_storage", "shareable", "sqlalchemy_url"]
