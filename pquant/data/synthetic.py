"""Synthetic Gaussian-blob classification data for tests and smoke runs."""

from __future__ import annotations

from sklearn.datasets import make_classification

from pquant.config.errors import ConfigError
from pquant.data.base import ArrayDataModule


class SyntheticData(ArrayDataModule):
    def __init__(self, n_samples: int = 512, n_features: int = 16, n_classes: int = 4,
                 class_sep: float = 2.0, seed: int = 0, val_fraction: float = 0.1,
                 test_fraction: float = 0.2, split_seed: int = 0) -> None:
        if n_classes < 2:
            raise ConfigError(f"data.n_classes must be >= 2 (a classifier needs at least two "
                              f"classes), got {n_classes}")
        informative = max(2, min(n_features, n_classes * 2))
        x, y = make_classification(
            n_samples=n_samples, n_features=n_features, n_informative=informative,
            n_redundant=0, n_classes=n_classes, n_clusters_per_class=1, class_sep=class_sep,
            random_state=seed)
        super().__init__(x, y, val_fraction=val_fraction, test_fraction=test_fraction,
                         split_seed=split_seed, standardize=True)
