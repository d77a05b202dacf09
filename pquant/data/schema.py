"""Schemas of the shipped data modules (``data=digits``, ``data=synthetic``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SplitConfig:
    val_fraction: float = 0.1  #: fraction of all samples held out for validation
    test_fraction: float = 0.2  #: fraction of all samples held out for the final test
    split_seed: int = 0  #: seed of the (stratified) split; fixed so runs are comparable


@dataclass
class DigitsDataConfig(SplitConfig):
    """scikit-learn's bundled 8x8 digits (1797 samples, 64 features, 10 classes)."""

    _target_: str = "pquant.data.digits.DigitsData"
    standardize: bool = True  #: zero mean, unit variance per feature (fit on the train split)


@dataclass
class SyntheticDataConfig(SplitConfig):
    """Gaussian class blobs, for tests and smoke runs."""

    _target_: str = "pquant.data.synthetic.SyntheticData"
    n_samples: int = 512
    n_features: int = 16
    n_classes: int = 4
    class_sep: float = 2.0
    seed: int = 0
