"""The 8x8 handwritten digits bundled with scikit-learn (no download)."""

from __future__ import annotations

from dataclasses import dataclass

from sklearn.datasets import load_digits

from pquant.config.registry import register_schema
from pquant.data.base import ArrayDataModule
from pquant.data.schema import SplitConfig


class DigitsData(ArrayDataModule):
    """1797 grey-level 8x8 images (64 features, values 0..16), 10 classes."""

    def __init__(self, val_fraction: float = 0.1, test_fraction: float = 0.2,
                 split_seed: int = 0, standardize: bool = True) -> None:
        bunch = load_digits()
        super().__init__(bunch.data, bunch.target, val_fraction=val_fraction,
                         test_fraction=test_fraction, split_seed=split_seed,
                         standardize=standardize)


@register_schema("data", "digits")
@dataclass
class DigitsDataConfig(SplitConfig):
    """scikit-learn's bundled 8x8 digits (1797 samples, 64 features, 10 classes)."""

    _target_: str = "pquant.data.digits.DigitsData"
    standardize: bool = True  #: zero mean, unit variance per feature (fit on the train split)
