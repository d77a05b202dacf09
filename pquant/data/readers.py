"""Readers of feature/label tables in files, streamed in row chunks.

Every format gives a :class:`Table`: the number of rows, the feature names, the label column(s)
read whole (small), and the features read in row chunks as float32 -- so an 800k-row file is
held in memory once, in its split arrays, not several times. ``.npy`` files are memory-mapped,
CSV/parquet/ARFF read only the named columns, HDF5 datasets are sliced.

Formats (by extension): ``.npz``, ``.npy`` (a pair ``[features.npy, labels.npy]``), ``.csv``
(also ``.csv.gz``), ``.parquet``/``.pq``, ``.h5``/``.hdf5``, ``.arff``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from pquant.errors import ConfigError

CHUNK_ROWS = 65536
FORMATS = (".npz", ".npy", ".csv", ".csv.gz", ".parquet", ".pq", ".h5", ".hdf5", ".arff")


class Table:
    """Rows of features and labels in one file (or ``.npy`` pair).

    Attributes:
        setting: the config setting that named the file (for messages), e.g. ``data.path``.
        n_rows: number of rows.
        feature_names: one name per feature column.
    """

    setting: str
    n_rows: int
    feature_names: list[str]

    def labels(self) -> np.ndarray:
        """The label column ``(N,)`` (or ``(N, T)`` for several target columns)."""
        raise NotImplementedError

    def chunks(self, rows: int = CHUNK_ROWS) -> Iterator[np.ndarray]:
        """Float32 feature blocks ``(<=rows, F)`` in row order."""
        raise NotImplementedError

    def close(self) -> None:
        """Release file handles."""


# ----------------------------------------------------------------------------- helpers
def _names(value, what: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _pick(available: Sequence[str], features, label: list[str], setting: str, where: str
          ) -> list[str]:
    """Feature columns: the named ones (checked), or every column that is not a label."""
    missing = [c for c in label if c not in available]
    if missing:
        raise ConfigError(f"data.label: {', '.join(map(repr, missing))} is not in {setting}="
                          f"{where}; it has {', '.join(available)}")
    if features is None:
        names = [c for c in available if c not in label]
        if not names:
            raise ConfigError(f"data.features: {setting}={where} has no column besides the "
                              f"label {label}")
        return names
    names = _names(features, "features")
    missing = [c for c in names if c not in available]
    if missing:
        raise ConfigError(f"data.features: {', '.join(map(repr, missing))} is not in "
                          f"{setting}={where}; it has {', '.join(available)}")
    overlap = [c for c in names if c in label]
    if overlap:
        raise ConfigError(f"data.features: {overlap} is also the label (data.label)")
    return names


def _check_length(setting: str, where: str, what: str, n: int, expected: int) -> None:
    if n != expected:
        raise ConfigError(f"{setting}={where}: {what} has {n} rows but the label has "
                          f"{expected}; features and labels must have the same length")


# ----------------------------------------------------------------------------- arrays
class _ArrayTable(Table):
    """Features from one 2-D array or several 1-D arrays (``npz`` members, HDF5 datasets)."""

    def __init__(self, setting: str, where: str, arrays: dict, features, label: list[str]
                 ) -> None:
        self.setting = setting
        keys = list(arrays)
        if len(label) != 1:
            raise ConfigError(f"data.label: name one array of {setting}={where}, got {label}")
        if label[0] not in keys:
            raise ConfigError(f"data.label: {label[0]!r} is not in {setting}={where}; it has "
                              f"{', '.join(keys)}")
        if features is None:
            rest = [k for k in keys if k != label[0]]
            if len(rest) != 1:
                raise ConfigError(f"data.features: {setting}={where} holds {', '.join(rest)}; "
                                  f"name the features with data.features=<key> (or a list of "
                                  f"1-D keys)")
            features = rest
        names = _pick(keys, features, label, setting, where)
        self._label = arrays[label[0]]
        n = int(self._label.shape[0])
        self._columns = [arrays[k] for k in names]
        for key, a in zip(names, self._columns):
            _check_length(setting, where, f"features {key!r}", int(a.shape[0]), n)
            if a.ndim > 2:
                raise ConfigError(f"data.features: {key!r} in {setting}={where} has shape "
                                  f"{tuple(a.shape)}; features must be 1-D or 2-D (rows, "
                                  f"features)")
        self.n_rows = n
        self.feature_names = []
        for key, a in zip(names, self._columns):
            width = 1 if a.ndim == 1 else int(a.shape[1])
            self.feature_names += [key] if width == 1 and a.ndim == 1 else [
                f"{key}[{j}]" for j in range(width)]

    def labels(self) -> np.ndarray:
        return np.asarray(self._label)

    def chunks(self, rows: int = CHUNK_ROWS) -> Iterator[np.ndarray]:
        for start in range(0, self.n_rows, rows):
            parts = [np.asarray(c[start:start + rows], dtype=np.float32)
                     for c in self._columns]
            yield np.column_stack(parts) if len(parts) > 1 or parts[0].ndim == 1 else parts[0]


class _NpzTable(_ArrayTable):
    def __init__(self, path: Path, setting: str, features, label: list[str]) -> None:
        self._file = np.load(path, allow_pickle=False)
        members = _LazyNpz(self._file)
        super().__init__(setting, str(path), members, features, label)

    def close(self) -> None:
        self._file.close()


class _LazyNpz(dict):
    """``npz`` members loaded on first use (each read once, only if named)."""

    def __init__(self, npz) -> None:
        super().__init__({k: None for k in npz.files})
        self._npz = npz

    def __getitem__(self, key):
        value = super().__getitem__(key)
        if value is None:
            value = self._npz[key]
            self[key] = value
        return value

    def __iter__(self):
        return iter(list(super().keys()))


class _H5Table(_ArrayTable):
    def __init__(self, path: Path, setting: str, features, label: list[str]) -> None:
        import h5py

        self._file = h5py.File(path, "r")
        datasets: dict = {}
        self._file.visititems(lambda name, obj: datasets.__setitem__(name, obj)
                              if isinstance(obj, h5py.Dataset) else None)
        super().__init__(setting, str(path), datasets, features, label)

    def labels(self) -> np.ndarray:
        return self._label[()]

    def close(self) -> None:
        self._file.close()


class _NpyPair(Table):
    def __init__(self, paths: list[Path], setting: str, features) -> None:
        if features is not None:
            raise ConfigError(f"data.features selects columns or keys; a .npy pair ({setting}="
                              f"[features.npy, labels.npy]) has one feature array, got "
                              f"data.features={features!r} (remove it)")
        self.setting = setting
        where = f"[{paths[0]}, {paths[1]}]"
        self._x = np.load(paths[0], mmap_mode="r", allow_pickle=False)
        self._y = np.load(paths[1], mmap_mode="r", allow_pickle=False)
        if self._x.ndim not in (1, 2):
            raise ConfigError(f"{setting}={where}: the features array must be 1-D or 2-D, got "
                              f"shape {self._x.shape}")
        self.n_rows = int(self._y.shape[0])
        _check_length(setting, where, f"the features file {paths[0].name}",
                      int(self._x.shape[0]), self.n_rows)
        width = 1 if self._x.ndim == 1 else int(self._x.shape[1])
        self.feature_names = [f"x[{j}]" for j in range(width)]

    def labels(self) -> np.ndarray:
        return np.asarray(self._y)

    def chunks(self, rows: int = CHUNK_ROWS) -> Iterator[np.ndarray]:
        for start in range(0, self.n_rows, rows):
            block = np.asarray(self._x[start:start + rows], dtype=np.float32)
            yield block.reshape(len(block), -1)


# ----------------------------------------------------------------------------- tables
class _ParquetTable(Table):
    def __init__(self, path: Path, setting: str, features, label: list[str]) -> None:
        import pyarrow.parquet as pq

        self.setting = setting
        self._file = pq.ParquetFile(path)
        available = list(self._file.schema_arrow.names)
        self.feature_names = _pick(available, features, label, setting, str(path))
        self._label = label
        self.n_rows = int(self._file.metadata.num_rows)

    def labels(self) -> np.ndarray:
        table = self._file.read(columns=self._label)
        cols = [table.column(c).to_numpy(zero_copy_only=False) for c in self._label]
        return cols[0] if len(cols) == 1 else np.column_stack(cols)

    def chunks(self, rows: int = CHUNK_ROWS) -> Iterator[np.ndarray]:
        for batch in self._file.iter_batches(batch_size=rows, columns=self.feature_names):
            cols = [batch.column(c).to_numpy(zero_copy_only=False)
                    for c in self.feature_names]
            yield _float_block(cols, self.feature_names, self.setting)

    def close(self) -> None:
        self._file.close()


def _float_block(cols: list[np.ndarray], names: list[str], setting: str) -> np.ndarray:
    try:
        return np.column_stack([np.asarray(c, dtype=np.float32) for c in cols])
    except (TypeError, ValueError):
        for name, c in zip(names, cols):
            try:
                np.asarray(c, dtype=np.float32)
            except (TypeError, ValueError):
                raise ConfigError(f"data.features: column {name!r} of {setting} is not numeric "
                                  f"(e.g. {c[0]!r}); name only numeric columns in "
                                  f"data.features") from None
        raise


class _CsvTable(Table):
    """CSV, and the data section of ARFF files (``skip`` header lines, given ``columns``)."""

    def __init__(self, path: Path, setting: str, features, label: list[str],
                 columns: list[str] | None = None, skip: int = 0, quote: str = '"') -> None:
        import pandas as pd

        self.setting, self._path = setting, path
        self._kw = {"skiprows": skip, "quotechar": quote, "skipinitialspace": True}
        if columns is None:
            columns = [str(c) for c in pd.read_csv(path, nrows=0).columns]
            self._kw["header"] = 0
        else:
            self._kw.update(header=None, names=columns, comment="%", na_values=["?"])
        self.feature_names = _pick(columns, features, label, setting, str(path))
        self._label = label
        self._labels = None
        self.n_rows = len(self.labels())

    def labels(self) -> np.ndarray:
        import pandas as pd

        if self._labels is None:
            frame = pd.read_csv(self._path, usecols=self._label, **self._kw)
            cols = [frame[c].to_numpy() for c in self._label]
            self._labels = cols[0] if len(cols) == 1 else np.column_stack(cols)
        return self._labels

    def chunks(self, rows: int = CHUNK_ROWS) -> Iterator[np.ndarray]:
        import pandas as pd

        reader = pd.read_csv(self._path, usecols=self.feature_names, chunksize=rows,
                             **self._kw)
        with reader:
            for frame in reader:
                yield _float_block([frame[c].to_numpy() for c in self.feature_names],
                                   self.feature_names, self.setting)


def _arff_table(path: Path, setting: str, features, label: list[str]) -> _CsvTable:
    """Dense ARFF: the ``@attribute`` names from the header, the rows as CSV."""
    names: list[str] = []
    skip = 0
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            skip += 1
            text = line.strip()
            low = text.lower()
            if low.startswith("@attribute"):
                rest = text[len("@attribute"):].strip()
                if rest[:1] in "'\"":
                    end = rest.index(rest[0], 1)
                    names.append(rest[1:end])
                else:
                    names.append(rest.split()[0])
            elif low.startswith("@data"):
                break
        else:
            raise ConfigError(f"{setting}={path}: no @data section; not an ARFF file")
    return _CsvTable(path, setting, features, label, columns=names, skip=skip, quote="'")


# ----------------------------------------------------------------------------- entry
def suffix(path: Path) -> str:
    name = path.name.lower()
    return ".csv.gz" if name.endswith(".csv.gz") else path.suffix.lower()


def open_table(value, setting: str, features, label) -> Table:
    """Open the file(s) named by the setting ``setting`` (value: a path or a ``.npy`` pair).

    Raises:
        ConfigError: missing file, unknown format, missing keys/columns, mismatched lengths.
    """
    label_names = _names(label, "label")
    if not label_names:
        raise ConfigError("data.label must name the label column/key, got null")
    if isinstance(value, str):
        paths = [Path(value).expanduser()]
    else:
        paths = [Path(str(v)).expanduser() for v in value]
    for p in paths:
        if not p.is_file():
            raise ConfigError(f"{setting}: no such file: {p}" + (
                f" (resolved from {Path.cwd()})" if not p.is_absolute() else ""))
    kinds = [suffix(p) for p in paths]
    if len(paths) == 2 and kinds == [".npy", ".npy"]:
        return _NpyPair(paths, setting, features)
    if len(paths) != 1 or kinds[0] not in FORMATS:
        raise ConfigError(f"{setting} must be one file ending in {', '.join(FORMATS)}, or a "
                          f".npy pair [features.npy, labels.npy]; got {value!r}")
    path, kind = paths[0], kinds[0]
    if kind == ".npy":
        raise ConfigError(f"{setting}: a .npy file holds one array; give the features and the "
                          f"labels as a pair, {setting}=[x.npy,y.npy], got {value!r}")
    if kind == ".npz":
        return _NpzTable(path, setting, features, label_names)
    if kind in (".h5", ".hdf5"):
        return _H5Table(path, setting, features, label_names)
    if kind in (".parquet", ".pq"):
        return _ParquetTable(path, setting, features, label_names)
    if kind == ".arff":
        return _arff_table(path, setting, features, label_names)
    return _CsvTable(path, setting, features, label_names)
