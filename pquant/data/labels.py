"""Class labels given as integers or strings -> codes ``0..C-1`` (the mapping is kept)."""

from __future__ import annotations

import numpy as np

from pquant.errors import ConfigError


def infer_task(labels: np.ndarray) -> str:
    """``regression`` for floating-point targets (or several target columns), else
    ``classification`` (integers, strings, booleans)."""
    if labels.ndim > 1 and labels.shape[1] > 1:
        return "regression"
    return "regression" if np.issubdtype(labels.dtype, np.floating) else "classification"


def _as_class_values(labels: np.ndarray, setting: str) -> np.ndarray:
    labels = labels.reshape(len(labels), -1)
    if labels.shape[1] != 1:
        raise ConfigError(f"{setting}: a classification label must be one column, got "
                          f"{labels.shape[1]} columns")
    labels = labels[:, 0]
    if labels.dtype.kind == "S":  # fixed-length bytes (HDF5, numpy)
        labels = labels.astype(str)
    if labels.dtype == object:
        labels = np.array([v.decode() if isinstance(v, bytes) else v for v in labels],
                          dtype=object)
        missing = [i for i, v in enumerate(labels[:1_000_000]) if v is None
                   or (isinstance(v, float) and np.isnan(v))]
        if missing:
            raise ConfigError(f"{setting}: {len(missing)} missing label(s), first at row "
                              f"{missing[0]}")
        return labels.astype(str)
    if np.issubdtype(labels.dtype, np.floating):
        bad = ~np.isfinite(labels)
        if bad.any():
            raise ConfigError(f"{setting}: {int(bad.sum())} label(s) are NaN or infinite, "
                              f"first at row {int(np.argmax(bad))}")
        frac = labels != np.round(labels)
        if frac.any():
            raise ConfigError(
                f"{setting}: class labels must be integers or strings, got the non-integer "
                f"value {labels[np.argmax(frac)]!r} at row {int(np.argmax(frac))}; for real-valued "
                f"targets set data.task=regression (or training.task=regression)")
        return labels.astype(np.int64)
    return labels


def encode(labels: np.ndarray, setting: str) -> tuple[np.ndarray, list]:
    """Codes ``(N,)`` int64 and the sorted original label of each code.

    Raises:
        ConfigError: missing/NaN labels, non-integer floats, or several label columns.
    """
    values = _as_class_values(labels, setting)
    classes, codes = np.unique(values, return_inverse=True)
    return codes.astype(np.int64), [v.item() if hasattr(v, "item") else v for v in classes]


def encode_like(labels: np.ndarray, classes: list, setting: str, train_setting: str
                ) -> np.ndarray:
    """Codes of ``labels`` under the mapping of the training split (``classes``)."""
    values = _as_class_values(labels, setting)
    known = np.asarray(classes, dtype=values.dtype if values.dtype != object else str)
    pos = np.searchsorted(known, values)
    pos_clipped = np.minimum(pos, len(known) - 1)
    unknown = known[pos_clipped] != values
    if unknown.any():
        extra = sorted({v.item() if hasattr(v, "item") else v for v in values[unknown]})[:5]
        raise ConfigError(f"{setting}: label(s) {extra} do not occur in {train_setting} "
                          f"(classes {classes})")
    return pos.astype(np.int64)


def regression_targets(labels: np.ndarray, setting: str) -> np.ndarray:
    """Float32 ``(N, T)`` targets; NaN/inf or non-numeric values are an error."""
    try:
        y = np.asarray(labels, dtype=np.float32)
    except (TypeError, ValueError):
        raise ConfigError(f"{setting}: regression targets must be numbers, got values of "
                          f"type {labels.dtype}") from None
    y = y.reshape(len(y), -1)
    bad = ~np.isfinite(y)
    if bad.any():
        row = int(np.argmax(bad.any(axis=1)))
        raise ConfigError(f"{setting}: {int(bad.any(axis=1).sum())} target row(s) are NaN or "
                          f"infinite, first at row {row}")
    return y
