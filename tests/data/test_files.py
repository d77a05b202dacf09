"""data=files: every format trains, splits are seeded/stratified/standardised, bad files fail
clearly (in process; the command-line behaviour is in test_data_cli.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pquant.data.files import FilesData
from pquant.errors import ConfigError
from tests.data.make_files import blobs, linear, write

FORMATS = ["csv", "parquet", "npz", "npy", "h5", "arff"]
RUN = ["data=files", "training.epochs=3", "training.pretraining_epochs=1",
       "training.progress=false", "pruning.epsilon=0.5", "tracking=none",
       "training.optimizer.lr=0.01"]


def _path_value(value: str):
    """The override string of a .npy pair as the list the config would hold."""
    return value[1:-1].split(",") if value.startswith("[") else value


def _run(tmp_path, overrides):
    from pquant import load_config
    from pquant.runner import run

    return run(load_config([*RUN, *overrides]), output_dir=str(tmp_path / "run"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_trains_end_to_end(tmp_path, fmt):
    x, y = blobs(300, 5, 3)
    labels = np.asarray(["cat", "dog", "eel"])[y] if fmt in ("csv", "parquet", "h5", "arff") \
        else y
    path = write(fmt, tmp_path, x, labels)
    report = _run(tmp_path, [f"data.path={path}"])
    assert report["task"] == "classification"
    assert report["classes"] == (["cat", "dog", "eel"] if labels.dtype.kind == "U" else [0, 1, 2])
    assert report["test/accuracy"] > 0.8  # separable blobs
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert saved["classes"] == report["classes"]


def test_all_formats_give_the_same_split_and_features(tmp_path):
    x, y = blobs(200, 4, 2, seed=3)
    loaded = []
    for fmt in FORMATS:
        folder = tmp_path / fmt
        folder.mkdir()
        data = FilesData(path=_path_value(write(fmt, folder, x, y)))
        loaded.append(data)
    ref = loaded[0]
    for other in loaded[1:]:
        for split in ("train", "val", "test"):
            np.testing.assert_allclose(other.splits[split][0].numpy(),
                                       ref.splits[split][0].numpy(), rtol=0, atol=1e-5)
            assert other.splits[split][1].tolist() == ref.splits[split][1].tolist()


def test_split_is_seeded_stratified_and_standardised_on_train_only(tmp_path):
    x, y = blobs(1000, 3, 4, seed=1)
    x[:, 0] = x[:, 0] * 10 + 5
    path = write("npz", tmp_path, x, y)
    a = FilesData(path=path, val_fraction=0.2, test_fraction=0.1, split_seed=7)
    b = FilesData(path=path, val_fraction=0.2, test_fraction=0.1, split_seed=7)
    c = FilesData(path=path, val_fraction=0.2, test_fraction=0.1, split_seed=8)
    sizes = {k: len(v[1]) for k, v in a.splits.items()}
    assert sizes == {"train": 700, "val": 200, "test": 100}
    assert a.splits["val"][1].tolist() == b.splits["val"][1].tolist()
    assert a.splits["val"][1].tolist() != c.splits["val"][1].tolist()
    for split, (_, labels) in a.splits.items():  # 250 rows per class -> exact proportions
        assert np.bincount(labels.numpy()).tolist() == [sizes[split] // 4] * 4
    train = a.splits["train"][0].numpy()
    np.testing.assert_allclose(train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(train.std(0), 1, atol=1e-4)
    assert abs(float(a.splits["val"][0].numpy().mean(0)[0])) > 1e-4  # not refitted on val
    np.testing.assert_allclose(a.feature_mean[0], x[:, 0].mean(), rtol=0.05)
    raw = FilesData(path=path, standardize=False, split_seed=7, val_fraction=0.2,
                    test_fraction=0.1)
    assert set(map(tuple, raw.splits["test"][0].numpy().round(4))) <= set(
        map(tuple, x.round(4)))


def test_three_files_and_label_mapping_from_the_train_file(tmp_path):
    x, y = blobs(90, 3, 3)
    names = np.asarray(["b", "a", "c"])
    paths = {}
    for split, rows in (("train", slice(0, 60)), ("val", slice(60, 75)), ("test", slice(75, 90))):
        folder = tmp_path / split
        folder.mkdir()
        paths[f"{split}_path"] = write("csv", folder, x[rows], names[y[rows]])
    data = FilesData(**paths)
    assert data.classes == ["a", "b", "c"]
    assert {k: len(v[1]) for k, v in data.splits.items()} == {"train": 60, "val": 15,
                                                              "test": 15}
    got = np.asarray(data.classes)[data.splits["test"][1].numpy()]
    assert got.tolist() == names[y[75:90]].tolist()


def test_float_targets_make_a_regression_and_several_columns_work(tmp_path):
    x, y = linear(200, 4)
    path = write("parquet", tmp_path, x, y, label="target")
    data = FilesData(path=path, label="target")
    assert data.task == "regression" and data.num_outputs == 1 and data.classes is None
    assert data.splits["train"][1].dtype.is_floating_point
    import pandas as pd

    frame = pd.read_parquet(path)
    frame["t2"] = -frame["target"]
    frame.to_parquet(tmp_path / "two.parquet")
    two = FilesData(path=str(tmp_path / "two.parquet"), label=["target", "t2"],
                    features=["f0", "f1", "f2", "f3"])
    assert two.num_outputs == 2 and two.splits["val"][1].shape[1] == 2


def test_only_the_named_columns_are_read(tmp_path, monkeypatch):
    import pandas as pd

    x, y = blobs(100, 3, 2)
    frame = pd.DataFrame(x, columns=["a", "b", "c"])
    frame["label"] = y
    frame["text"] = "not a number"
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_parquet(tmp_path / "d.parquet")
    seen = []
    original = pd.read_csv

    def spy(*args, **kwargs):
        seen.append(kwargs.get("usecols"))
        return original(*args, **kwargs)

    monkeypatch.setattr(pd, "read_csv", spy)
    data = FilesData(path=str(tmp_path / "d.csv"), features=["c", "a"])
    assert data.num_features == 2
    assert all(cols is None or "text" not in cols for cols in seen)
    np.testing.assert_allclose(  # column order is the configured one
        FilesData(path=str(tmp_path / "d.parquet"), features=["c", "a"],
                  standardize=False).splits["train"][0][:, 0].numpy(),
        FilesData(path=str(tmp_path / "d.parquet"), features=["c"],
                  standardize=False).splits["train"][0][:, 0].numpy())


def test_npy_features_are_memory_mapped_and_read_in_blocks(tmp_path):
    from pquant.data.readers import open_table

    x, y = blobs(1000, 4, 2)
    write("npy", tmp_path, x, y)
    table = open_table([str(tmp_path / "x.npy"), str(tmp_path / "y.npy")], "data.path", None,
                       "label")
    assert isinstance(table._x, np.memmap)
    blocks = list(table.chunks(300))
    assert [len(b) for b in blocks] == [300, 300, 300, 100]
    np.testing.assert_array_equal(np.concatenate(blocks), x)
    a = FilesData(path=[str(tmp_path / "x.npy"), str(tmp_path / "y.npy")], chunk_rows=300)
    b = FilesData(path=[str(tmp_path / "x.npy"), str(tmp_path / "y.npy")])
    for split in ("train", "val", "test"):
        assert np.array_equal(a.splits[split][0].numpy(), b.splits[split][0].numpy())


# ----------------------------------------------------------------------------- bad files
def _bad(tmp_path, kind):
    x, y = blobs(60, 3, 3)
    if kind == "missing file":
        return {"path": str(tmp_path / "nope.csv")}, "data.path: no such file"
    if kind == "missing column":
        return ({"path": write("csv", tmp_path, x, y), "features": ["f0", "zz"]},
                "data.features: 'zz' is not in data.path=")
    if kind == "missing label":
        return ({"path": write("parquet", tmp_path, x, y), "label": "target"},
                "data.label: 'target' is not in data.path=")
    if kind == "missing key":
        return ({"path": write("npz", tmp_path, x, y), "features": "X"},
                "data.features: 'X' is not in data.path=")
    if kind == "nan feature":
        x[17, 1] = np.nan
        return {"path": write("h5", tmp_path, x, y)}, "feature 'features[1]' is NaN or " \
                                                       "infinite at row 17"
    if kind == "nan label":
        return ({"path": write("csv", tmp_path, x, np.where(np.arange(60) == 5, np.nan, 1.0)),
                 "task": "regression"}, "target row(s) are NaN or infinite, first at row 5")
    if kind == "lengths":
        np.savez(tmp_path / "d.npz", features=x, label=y[:-1])
        return {"path": str(tmp_path / "d.npz")}, "has 60 rows but the label has 59"
    if kind == "too few":
        return ({"path": write("csv", tmp_path, x[:6], y[:6])},
                "data: too few samples for the split")
    if kind == "rare class":
        y = y.copy()
        y[:] = 0
        y[3] = 1
        return {"path": write("csv", tmp_path, x, y)}, "class 1 has only 1 row(s)"
    if kind == "single npy":
        write("npy", tmp_path, x, y)
        return {"path": str(tmp_path / "x.npy")}, "give the features and the labels as a pair"
    if kind == "unknown format":
        (tmp_path / "d.txt").write_text("1,2\n")
        return {"path": str(tmp_path / "d.txt")}, "data.path must be one file ending in"
    if kind == "corrupt":
        (tmp_path / "d.h5").write_bytes(b"not an hdf5 file")
        return {"path": str(tmp_path / "d.h5")}, "data.path: could not read"
    if kind == "no path":
        return {}, "data.path is not set"
    if kind == "float classes":
        return ({"path": write("csv", tmp_path, x, y + 0.5), "task": "classification"},
                "class labels must be integers or strings")
    raise ValueError(kind)


BAD = ["missing file", "missing column", "missing label", "missing key", "nan feature",
       "nan label", "lengths", "too few", "rare class", "single npy", "unknown format",
       "no path", "float classes", "corrupt"]


@pytest.mark.parametrize("kind", BAD)
def test_bad_files_are_clear_errors(tmp_path, kind):
    kwargs, message = _bad(tmp_path, kind)
    with pytest.raises(ConfigError) as info:
        FilesData(**kwargs)
    assert message in str(info.value)


def test_a_large_file_is_held_in_memory_once(tmp_path):
    """200k rows x 64 float32 features (51 MB): the split arrays are the only copy."""
    import gc
    import tracemalloc

    n, f = 200_000, 64
    rng = np.random.default_rng(0)
    x = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32,
                                  shape=(n, f))
    for start in range(0, n, 50_000):
        x[start:start + 50_000] = rng.normal(size=(50_000, f))
    x.flush()
    del x
    np.save(tmp_path / "y.npy", np.arange(n) % 5)
    gc.collect()
    tracemalloc.start()
    try:
        data = FilesData(path=[str(tmp_path / "x.npy"), str(tmp_path / "y.npy")])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    features = n * f * 4
    assert sum(v[0].numel() for v in data.splits.values()) == n * f
    assert peak < 1.35 * features, f"peak {peak / 1e6:.1f} MB for {features / 1e6:.1f} MB"
    train = data.splits["train"][0].numpy()
    np.testing.assert_allclose(train.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(train.std(0), 1, atol=1e-4)
