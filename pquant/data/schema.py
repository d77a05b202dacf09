"""Schemas of the shipped data modules (``data=digits``, ``synthetic``, ``files``, ``jets``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional


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


@dataclass
class JetsDataConfig(SplitConfig):
    """hls4ml jet tagging (OpenML hls4ml_lhc_jets_hlf): 16 features, 5 classes, 830k jets."""

    _target_: str = "pquant.data.jets.JetsData"
    #: local copy of the table (ARFF, CSV or parquet); null: download into cache_dir once
    path: Optional[str] = None
    cache_dir: str = "~/.cache/pquant/openml"
    download_timeout: float = 120.0  #: seconds before giving up on the network
    standardize: bool = True
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    split_seed: int = 42
