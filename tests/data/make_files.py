"""Small generated data files for the data=files / data=jets tests (no network)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

JET_CLASSES = ["g", "q", "t", "w", "z"]


def blobs(n: int = 300, f: int = 5, classes: int = 3, seed: int = 0):
    """Separable class blobs: ``(x float32 (n, f), y int (n,))``."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    rng.shuffle(y)
    centres = rng.normal(scale=3.0, size=(classes, f))
    x = (centres[y] + rng.normal(size=(n, f))).astype(np.float32)
    return x, y


def linear(n: int = 300, f: int = 5, seed: int = 0):
    """A noisy linear target of unit scale: ``(x float32 (n, f), y float64 (n,))``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, f)).astype(np.float32)
    w = rng.normal(size=f)
    y = x @ w
    return x, (y / y.std() + 0.05 * rng.normal(size=n))


def write(fmt: str, folder: Path, x: np.ndarray, y: np.ndarray, label: str = "label",
          names: list[str] | None = None) -> str:
    """Write ``x``/``y`` in format ``fmt``; returns the ``data.path`` override value."""
    import pandas as pd

    names = names or [f"f{i}" for i in range(x.shape[1])]
    frame = pd.DataFrame(x, columns=names)
    frame[label] = y
    if fmt == "csv":
        frame.to_csv(folder / "d.csv", index=False)
        return str(folder / "d.csv")
    if fmt == "parquet":
        frame.to_parquet(folder / "d.parquet", index=False)
        return str(folder / "d.parquet")
    if fmt == "npz":
        np.savez(folder / "d.npz", features=x, **{label: y})
        return str(folder / "d.npz")
    if fmt == "npy":
        np.save(folder / "x.npy", x)
        np.save(folder / "y.npy", y)
        return f"[{folder / 'x.npy'},{folder / 'y.npy'}]"
    if fmt == "h5":
        import h5py

        with h5py.File(folder / "d.h5", "w") as fh:
            fh["features"] = x
            fh[label] = y.astype("S") if y.dtype.kind in "UO" else y
        return str(folder / "d.h5")
    if fmt == "arff":
        lines = ["@relation test"] + [f"@attribute {n} numeric" for n in names]
        kinds = sorted(set(map(str, y)))
        lines += [f"@attribute {label} {{{','.join(kinds)}}}", "@data"]
        lines += [",".join([*(f"{v:.6g}" for v in row), f"'{t}'"]) for row, t in zip(x, y)]
        (folder / "d.arff").write_text("\n".join(lines) + "\n")
        return str(folder / "d.arff")
    raise ValueError(fmt)


def jets_csv(folder: Path, n: int = 1500, seed: int = 0) -> Path:
    """A table with the OpenML jets columns: 16 features and a ``class`` of g/q/t/w/z."""
    from pquant.data.jets import FEATURES

    x, y = blobs(n, len(FEATURES), len(JET_CLASSES), seed)
    labels = np.asarray(JET_CLASSES)[y]
    path = folder / "jets.csv"
    write("csv", folder, x, labels, label="class", names=FEATURES)
    (folder / "d.csv").rename(path)
    return path
