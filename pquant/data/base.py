"""Data modules: train/val/test tensors for classification or regression, served as loaders.

A data module is anything with ``num_features``, ``num_classes`` (classification) or
``num_outputs``, ``train_loader``, ``val_loader``, ``test_loader``, ``example_input`` and
``describe``; ``task`` (``classification`` | ``regression``) defaults to classification.
"""

from __future__ import annotations

import numpy as np
import torch

from pquant.data.loader import TensorLoader
from pquant.data.split import SPLITS, split_indices, standardize_
from pquant.errors import check_choice

TASKS = ("classification", "regression")


class DataModule:
    """Holds the train/val/test tensors and builds :class:`TensorLoader` objects.

    Args:
        splits: ``{"train"|"val"|"test": (x, y)}``; ``x`` float32 ``(N, F)``; ``y`` int64
            ``(N,)`` class codes (classification) or float32 ``(N, T)`` targets (regression).
        task: ``classification`` or ``regression``.
        classes: the original label of each class code (classification), if encoded.
        num_classes: number of classes (default: largest code in any split + 1).
    """

    def __init__(self, splits: dict[str, tuple[np.ndarray, np.ndarray]], task: str,
                 classes: list | None = None, num_classes: int | None = None) -> None:
        self.task = task
        self.splits = {
            name: (torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                   torch.from_numpy(np.ascontiguousarray(y)))
            for name, (x, y) in splits.items()
        }
        self.num_features = int(self.splits["train"][0].shape[1])
        self.classes = None if classes is None else list(classes)
        if task == "regression":
            self.num_outputs = int(self.splits["train"][1].shape[1])
            self.num_classes = 0
        else:
            if num_classes is None:
                num_classes = max(int(y.max()) for _, y in self.splits.values()) + 1
            self.num_classes = self.num_outputs = int(num_classes)

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
        if self.task == "regression":
            what = f"{self.num_outputs} regression target(s)"
        else:
            what = f"{self.num_classes} classes"
        return f"{self.num_features} features, {what} ({sizes})"


class ArrayDataModule(DataModule):
    """In-memory arrays, split once (stratified for classes), standardised on the train split.

    Args:
        x: features, ``(N, F)`` array.
        y: integer class labels ``(N,)`` (classification) or targets ``(N,)``/``(N, T)``
            (regression).
        val_fraction: fraction of all samples for validation.
        test_fraction: fraction of all samples for the test set.
        split_seed: seed of the split.
        standardize: scale features to zero mean / unit variance using train statistics.
        task: ``classification`` or ``regression``.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, *, val_fraction: float = 0.1,
                 test_fraction: float = 0.2, split_seed: int = 0, standardize: bool = True,
                 path: str = "data", task: str = "classification") -> None:
        check_choice(f"{path}.task", task, TASKS)
        x = np.asarray(x, dtype=np.float32)
        if task == "regression":
            y = np.asarray(y, dtype=np.float32).reshape(len(y), -1)
        else:
            y = np.asarray(y, dtype=np.int64)
        idx = split_indices(len(x), y if task == "classification" else None, val_fraction,
                            test_fraction, split_seed, path)
        xs = {name: x[idx[name]] for name in SPLITS}
        if standardize:
            standardize_(xs)
        super().__init__({name: (xs[name], y[idx[name]]) for name in SPLITS}, task,
                         num_classes=None if task == "regression" else int(y.max()) + 1)
