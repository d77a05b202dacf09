"""``data=files``: features and labels from the user's own files.

One file (``data.path``) is split into train/val/test by ``data.val_fraction`` and
``data.test_fraction`` (stratified by class, seeded by ``data.split_seed``); or three files
(``data.train_path``, ``data.val_path``, ``data.test_path``) are used as they are. Features are
standardised with the training split's statistics; class labels (integers or strings) are
encoded as ``0..C-1`` with the mapping kept in ``classes`` (and in the run's report).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from pquant.config.registry import register_schema
from pquant.data import labels as L
from pquant.data.base import TASKS, DataModule
from pquant.data.readers import Table, open_table
from pquant.data.schema import SplitConfig
from pquant.data.split import SPLITS, split_indices, standardize_
from pquant.errors import ConfigError, check_choice

log = logging.getLogger(__name__)

#: bytes of float32 features read per block (the block's rows follow from the feature count)
BLOCK_BYTES = 2 << 20


def _block_rows(table: Table, chunk_rows: int | None) -> int:
    return chunk_rows or max(1024, BLOCK_BYTES // (4 * max(len(table.feature_names), 1)))


@contextmanager
def _reading(setting: str, value) -> Iterator[None]:
    """Turn a reader's failure on a malformed file into one message naming the setting."""
    try:
        yield
    except ConfigError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{setting}: could not read {value!r}: {type(exc).__name__}: "
                          f"{exc}") from None


def _check_finite(block: np.ndarray, start: int, table: Table) -> None:
    bad = ~np.isfinite(block)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ConfigError(
            f"{table.setting}: feature {table.feature_names[col]!r} is NaN or infinite at row "
            f"{start + int(row)} ({int(bad.any(axis=1).sum())} such rows in this block of "
            f"{len(block)}); clean the file, or leave the column out of data.features")


def _read_all(table: Table, chunk_rows: int) -> np.ndarray:
    """All feature rows as one float32 ``(N, F)`` array (filled block by block)."""
    out = np.empty((table.n_rows, len(table.feature_names)), dtype=np.float32)
    start = 0
    for block in table.chunks(chunk_rows):
        _check_finite(block, start, table)
        out[start:start + len(block)] = block
        start += len(block)
    return out


def _scatter(table: Table, idx: dict[str, np.ndarray], chunk_rows: int
             ) -> dict[str, np.ndarray]:
    """The feature rows of each split, read block by block into preallocated arrays.

    Row ``idx[s][j]`` of the file becomes row ``j`` of split ``s`` (the split's own order).
    """
    n = table.n_rows
    which = np.empty(n, dtype=np.int8)
    where = np.empty(n, dtype=np.int64)
    for k, name in enumerate(SPLITS):
        which[idx[name]] = k
        where[idx[name]] = np.arange(len(idx[name]))
    out = {name: np.empty((len(idx[name]), len(table.feature_names)), dtype=np.float32)
           for name in SPLITS}
    start = 0
    for block in table.chunks(chunk_rows):
        _check_finite(block, start, table)
        w, p = which[start:start + len(block)], where[start:start + len(block)]
        for k, name in enumerate(SPLITS):
            sel = w == k
            out[name][p[sel]] = block[sel]
        start += len(block)
    return out


class FilesData(DataModule):
    """Features and labels from ``.npz``, ``.npy`` pairs, CSV, parquet, HDF5 or ARFF files.

    Args:
        path: one file to split (or a ``.npy`` pair ``[features.npy, labels.npy]``).
        train_path / val_path / test_path: three files used as the splits (instead of ``path``).
        features: feature columns/keys (a list), or one key of a 2-D array; ``None``: every
            column that is not the label.
        label: the label column/key (a list of columns: several regression targets).
        task: ``auto`` (floating-point labels -> regression, else classification),
            ``classification`` or ``regression``.
        standardize: scale features with the train split's mean and std.
        val_fraction / test_fraction / split_seed: the split of ``path``.
        chunk_rows: rows read per block (default: 2 MiB of float32 features).
    """

    def __init__(self, path=None, train_path=None, val_path=None, test_path=None,
                 features=None, label="label", task: str = "auto", standardize: bool = True,
                 val_fraction: float = 0.1, test_fraction: float = 0.2, split_seed: int = 0,
                 chunk_rows: int | None = None, section: str = "data") -> None:
        check_choice(f"{section}.task", task, ("auto", *TASKS))
        three = {"train_path": train_path, "val_path": val_path, "test_path": test_path}
        given = [k for k, v in three.items() if v is not None]
        if path is not None and given:
            raise ConfigError(f"{section}.path and {section}.{given[0]} are both set; give one "
                              f"file to split ({section}.path) or the three splits "
                              f"({section}.train_path, val_path, test_path)")
        if path is None and len(given) != 3:
            if not given:
                raise ConfigError(f"{section}.path is not set: name a .npz, .npy pair, .csv, "
                                  f".parquet, .h5/.hdf5 or .arff file ({section}.path=...) or "
                                  f"three files ({section}.train_path, val_path, test_path)")
            missing = [k for k in three if k not in given]
            raise ConfigError(f"{section}: {', '.join(given)} given without "
                              f"{', '.join(missing)}; set all three, or one {section}.path")
        self.section = section
        if path is not None:
            splits, task, classes = self._one_file(path, features, label, task, val_fraction,
                                                   test_fraction, split_seed, chunk_rows)
        else:
            splits, task, classes = self._three_files(three, features, label, task,
                                                      chunk_rows)
        xs = {name: x for name, (x, _) in splits.items()}
        self.feature_mean = self.feature_std = None
        if standardize:
            rows = chunk_rows or max(1024, BLOCK_BYTES // (4 * xs["train"].shape[1]))
            self.feature_mean, self.feature_std = standardize_(xs, block_rows=rows)
        super().__init__(splits, task, classes=classes,
                         num_classes=None if classes is None else len(classes))

    # ------------------------------------------------------------------ pieces
    def _labels(self, table: Table, task: str, classes: list | None = None,
                train_setting: str | None = None):
        raw = table.labels()
        if task == "auto":
            task = L.infer_task(raw)
            log.info("%s: %s labels -> task %s (set %s.task to change)", table.setting,
                     raw.dtype, task, self.section)
        setting = f"{table.setting} ({self.section}.label)"
        if task == "regression":
            return L.regression_targets(raw, setting), task, None
        if classes is None:
            codes, classes = L.encode(raw, setting)
            return codes, task, classes
        return L.encode_like(raw, classes, setting, train_setting), task, classes

    def _one_file(self, path, features, label, task, val_fraction, test_fraction, seed,
                  chunk_rows):
        setting = f"{self.section}.path"
        with _reading(setting, path):
            table = open_table(path, setting, features, label)
            try:
                y, task, classes = self._labels(table, task)
                idx = split_indices(table.n_rows, y if task == "classification" else None,
                                    val_fraction, test_fraction, seed, self.section, classes)
                xs = _scatter(table, idx, _block_rows(table, chunk_rows))
            finally:
                table.close()
        return {name: (xs[name], y[idx[name]]) for name in SPLITS}, task, classes

    def _three_files(self, paths: dict, features, label, task, chunk_rows):
        splits: dict = {}
        classes = None
        names = None
        for name in SPLITS:
            setting = f"{self.section}.{name}_path"
            with _reading(setting, paths[f"{name}_path"]):
                table = open_table(paths[f"{name}_path"], setting, features, label)
                try:
                    if names is not None and table.feature_names != names:
                        raise ConfigError(f"{setting}: its features {table.feature_names} "
                                          f"differ from those of {self.section}.train_path "
                                          f"{names}")
                    names = table.feature_names
                    y, task, classes = self._labels(table, task, classes,
                                                    f"{self.section}.train_path")
                    if len(y) < 1:
                        raise ConfigError(f"{setting}: too few samples for the {name} split: "
                                          f"the file has no rows")
                    splits[name] = (_read_all(table, _block_rows(table, chunk_rows)), y)
                finally:
                    table.close()
        return splits, task, classes


@register_schema("data", "files")
@dataclass
class FilesDataConfig(SplitConfig):
    """The user's own files: ``.npz``, ``.npy`` pair, ``.csv``, ``.parquet``, ``.h5``/``.hdf5``,
    ``.arff``. The split fractions apply to ``path``; three files are used as they are."""

    _target_: str = "pquant.data.files.FilesData"
    #: one file to split (a .npy pair as [features.npy, labels.npy])
    path: Any = None
    train_path: Any = None  #: instead of path: the three splits as files
    val_path: Any = None
    test_path: Any = None
    #: feature columns/keys (list), or the key of one 2-D array; null: all but the label
    features: Any = None
    label: Any = "label"  #: label column/key (a list: several regression targets)
    task: str = "auto"  #: auto (float labels -> regression) | classification | regression
    standardize: bool = True  #: zero mean, unit variance per feature (fit on the train split)
