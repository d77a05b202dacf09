"""What every data-set schema shares: the split settings.

Each data set's own schema lives in its module (``pquant/data/digits.py``: ``DigitsDataConfig``)
and is registered there with :func:`pquant.config.registry.register_schema`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SplitConfig:
    val_fraction: float = 0.1  #: fraction of all samples held out for validation
    test_fraction: float = 0.2  #: fraction of all samples held out for the final test
    split_seed: int = 0  #: seed of the (stratified) split; fixed so runs are comparable
