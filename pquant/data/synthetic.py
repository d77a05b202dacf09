"""Synthetic data for tests and smoke runs: Gaussian class blobs, or a noisy linear regression."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.datasets import make_classification, make_regression

from pquant.config.registry import register_schema
from pquant.data.base import TASKS, ArrayDataModule
from pquant.data.schema import SplitConfig
from pquant.errors import ConfigError, check_choice


class SyntheticData(ArrayDataModule):
    """``task=classification`` (or ``auto``, the default): ``n_classes`` blobs; ``task=regression``: ``n_targets``
    linear targets of ``n_features`` (half informative) plus ``noise``, scaled to unit variance.
    """

    def __init__(self, n_samples: int = 512, n_features: int = 16, n_classes: int = 4,
                 class_sep: float = 2.0, seed: int = 0, val_fraction: float = 0.1,
                 test_fraction: float = 0.2, split_seed: int = 0,
                 task: str = "auto", n_targets: int = 1, noise: float = 0.1) -> None:
        check_choice("data.task", task, ("auto", *TASKS))
        task = "classification" if task == "auto" else task
        if task == "classification" and n_classes < 2:
            raise ConfigError(f"data.n_classes must be >= 2 (a classifier needs at least two "
                              f"classes), got {n_classes}")
        if task == "regression":
            x, y = make_regression(n_samples=n_samples, n_features=n_features,
                                   n_informative=max(1, n_features // 2), n_targets=n_targets,
                                   noise=noise, random_state=seed)
            y = np.asarray(y).reshape(n_samples, -1)
            y = y / y.std(axis=0)
        else:
            informative = max(2, min(n_features, n_classes * 2))
            x, y = make_classification(
                n_samples=n_samples, n_features=n_features, n_informative=informative,
                n_redundant=0, n_classes=n_classes, n_clusters_per_class=1,
                class_sep=class_sep, random_state=seed)
        super().__init__(x, y, val_fraction=val_fraction, test_fraction=test_fraction,
                         split_seed=split_seed, standardize=True, task=task)


@register_schema("data", "synthetic")
@dataclass
class SyntheticDataConfig(SplitConfig):
    """Gaussian class blobs, or a noisy linear regression (``task=regression``), for tests and
    smoke runs."""

    _target_: str = "pquant.data.synthetic.SyntheticData"
    n_samples: int = 512
    n_features: int = 16
    n_classes: int = 4  #: classification only
    class_sep: float = 2.0  #: classification only
    seed: int = 0
    #: auto (follow training.task or the loss; else classification) | classification | regression
    task: str = "auto"
    n_targets: int = 1  #: regression only
    noise: float = 0.1  #: regression only: noise std before scaling targets to unit variance
