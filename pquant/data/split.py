"""Seeded train/val/test splits (stratified for classes) and train-only standardisation."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from pquant.errors import ConfigError, check_range

SPLITS = ("train", "val", "test")


def check_fractions(val_fraction: float, test_fraction: float, path: str = "data") -> None:
    """``val_fraction`` and ``test_fraction`` in (0, 1) with a sum below 1."""
    check_range(f"{path}.val_fraction", val_fraction, lo=0, hi=1, lo_open=True, hi_open=True)
    check_range(f"{path}.test_fraction", test_fraction, lo=0, hi=1, lo_open=True, hi_open=True)
    check_range(f"{path}.val_fraction + test_fraction", val_fraction + test_fraction, hi=1,
                hi_open=True)


def split_indices(n: int, labels: np.ndarray | None, val_fraction: float, test_fraction: float,
                  seed: int, path: str = "data", class_names: list | None = None
                  ) -> dict[str, np.ndarray]:
    """Row indices of the train/val/test splits of ``n`` samples.

    The test set is drawn first (``test_fraction`` of all rows), then the validation set
    (``val_fraction`` of all rows) from the rest -- scikit-learn's ``train_test_split``, so the
    same seed gives the same rows as splitting the arrays themselves.

    Args:
        n: number of rows.
        labels: ``(n,)`` class codes to stratify on, or ``None`` (regression: plain shuffle).
        val_fraction: share of all rows for validation, in (0, 1).
        test_fraction: share of all rows for the test set, in (0, 1).
        seed: seed of the shuffle.
        path: config path of the data section (for messages).
        class_names: the original label of each class code (for messages).

    Returns:
        ``{"train": idx, "val": idx, "test": idx}`` (int64 index arrays, in the split's order).

    Raises:
        ConfigError: a split would be empty, or a class has too few rows to appear in every split.
    """
    check_fractions(val_fraction, test_fraction, path)
    n_test = int(np.ceil(test_fraction * n))
    n_val = int(np.ceil(val_fraction * (n - n_test) / (1.0 - test_fraction)))
    too_few = (f"too few samples for the split: {n} rows give {n - n_test - n_val} train, "
               f"{n_val} val and {n_test} test rows")
    if n - n_test - n_val < 1 or n_val < 1 or n_test < 1:
        raise ConfigError(f"{path}: {too_few}; every split needs at least one row (use more "
                          f"data or change {path}.val_fraction / {path}.test_fraction, got "
                          f"{val_fraction} / {test_fraction})")
    if labels is not None:
        values, counts = np.unique(labels, return_counts=True)
        if len(values) > min(n_val, n_test):
            raise ConfigError(
                f"{path}: {too_few}, fewer than the {len(values)} classes; a stratified split "
                f"needs one row of each class in val and test (use more data or raise "
                f"{path}.val_fraction / {path}.test_fraction, got {val_fraction} / "
                f"{test_fraction})")
        if counts.min() < 3:
            rare = values[counts.argmin()].item()
            rare = class_names[rare] if class_names is not None else rare
            raise ConfigError(
                f"{path}: class {rare!r} has only {counts.min()} row(s); a stratified "
                f"train/val/test split needs at least 3 rows of every class")
    idx = np.arange(n, dtype=np.int64)
    try:
        rest, test = train_test_split(idx, test_size=test_fraction, random_state=seed,
                                      stratify=labels)
        val_share = val_fraction / (1.0 - test_fraction)
        strat = labels[rest] if labels is not None else None
        train, val = train_test_split(rest, test_size=val_share, random_state=seed,
                                      stratify=strat)
    except ValueError as exc:  # sklearn's own limits for stratification
        raise ConfigError(f"{path}: {too_few}: {exc}") from None
    return {"train": train, "val": val, "test": test}


def standardize_(splits: dict[str, np.ndarray], block_rows: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Scale every split in place with the train split's per-feature mean and std.

    Args:
        splits: ``{"train": (N_train, F), ...}`` float32 arrays, modified in place.
        block_rows: ``None``: numpy's ``mean``/``std`` over the whole train array (float32);
            else the statistics are accumulated in float64 over blocks of this many rows, and
            no temporary copy of the training split is made.

    Returns:
        ``(mean, std)``, each ``(F,)`` float32 (a constant feature keeps std 1).
    """
    train = splits["train"]
    if block_rows is None:
        mean = train.mean(axis=0)
        std = train.std(axis=0)
    else:
        n = max(len(train), 1)
        total = np.zeros(train.shape[1], dtype=np.float64)
        for start in range(0, len(train), block_rows):
            total += train[start:start + block_rows].sum(axis=0, dtype=np.float64)
        mean64 = total / n
        sq = np.zeros_like(total)
        for start in range(0, len(train), block_rows):
            d = train[start:start + block_rows] - mean64
            sq += np.einsum("ij,ij->j", d, d)
        mean, std = mean64.astype(np.float32), np.sqrt(sq / n).astype(np.float32)
    std[std == 0] = 1.0
    for a in splits.values():
        if block_rows is None:
            a -= mean
            a /= std
        else:
            for start in range(0, len(a), block_rows):
                block = a[start:start + block_rows]
                block -= mean
                block /= std
    return mean, std
