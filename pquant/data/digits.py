"""The 8x8 handwritten digits bundled with scikit-learn (no download)."""

from __future__ import annotations

from sklearn.datasets import load_digits

from pquant.data.base import ArrayDataModule


class DigitsData(ArrayDataModule):
    """1797 grey-level 8x8 images (64 features, values 0..16), 10 classes."""

    def __init__(self, val_fraction: float = 0.1, test_fraction: float = 0.2,
                 split_seed: int = 0, standardize: bool = True) -> None:
        bunch = load_digits()
        super().__init__(bunch.data, bunch.target, val_fraction=val_fraction,
                         test_fraction=test_fraction, split_seed=split_seed,
                         standardize=standardize)
