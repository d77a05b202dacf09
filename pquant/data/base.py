"""In-memory classification data: split once, standardise on the train split, serve loaders."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from pquant.config.checks import check_range
from pquant.data.loader import TensorLoader


class ArrayDataModule:
    """Holds train/val/test tensors and builds :class:`TensorLoader` objects.

    Args:
        x: features, ``(N, F)`` array.
        y: integer class labels, ``(N,)`` array.
        val_fraction: fraction of all samples for validation.
        test_fraction: fraction of all samples for the test set.
        split_seed: seed of the stratified split.
        standardize: scale features to zero mean / unit variance using train statistics.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, *, val_fraction: float = 0.1,
                 test_fraction: float = 0.2, split_seed: int = 0, standardize: bool = True,
                 path: str = "data") -> None:
        check_range(f"{path}.val_fraction", val_fraction, lo=0, hi=1, lo_open=True, hi_open=True)
        check_range(f"{path}.test_fraction", test_fraction, lo=0, hi=1, lo_open=True, hi_open=True)
        check_range(f"{path}.val_fraction + test_fraction", val_fraction + test_fraction, hi=1,
                    hi_open=True)
        x = np.asarray(x, dtype=np.float32)
        y = np.asarray(y, dtype=np.int64)
        x_rest, x_test, y_rest, y_test = train_test_split(
            x, y, test_size=test_fraction, random_state=split_seed, stratify=y)
        val_share = val_fraction / (1.0 - test_fraction)
        x_train, x_val, y_train, y_val = train_test_split(
            x_rest, y_rest, test_size=val_share, random_state=split_seed, stratify=y_rest)
        if standardize:
            mean = x_train.mean(axis=0)
            std = x_train.std(axis=0)
            std[std == 0] = 1.0
            x_train, x_val, x_test = ((a - mean) / std for a in (x_train, x_val, x_test))
        self.splits = {
            name: (torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)),
                   torch.from_numpy(np.ascontiguousarray(b)))
            for name, (a, b) in {"train": (x_train, y_train), "val": (x_val, y_val),
                                 "test": (x_test, y_test)}.items()
        }
        self.num_features = int(x.shape[1])
        self.num_classes = int(y.max()) + 1

    def loader(self, split: str, batch_size: int, *, shuffle: bool = False, seed: int = 0):
        x, y = self.splits[split]
        return TensorLoader(x, y, batch_size, shuffle=shuffle, seed=seed)

    def train_loader(self, batch_size: int, seed: int = 0) -> TensorLoader:
        return self.loader("train", batch_size, shuffle=True, seed=seed)

    def val_loader(self, batch_size: int) -> TensorLoader:
        return self.loader("val", batch_size)

    def test_loader(self, batch_size: int) -> TensorLoader:
        return self.loader("test", batch_size)

    def example_input(self, n: int = 1) -> torch.Tensor:
        return self.splits["train"][0][:n].clone()

    def describe(self) -> str:
        sizes = ", ".join(f"{k} {len(v[0])}" for k, v in self.splits.items())
        return f"{self.num_features} features, {self.num_classes} classes ({sizes})"
