"""``data=jets``: the hls4ml jet-substructure benchmark (OpenML ``hls4ml_lhc_jets_hlf``).

16 high-level features of jets from simulated LHC collisions, 5 classes (gluon, light quark,
W, Z, top: ``g, q, w, z, t``), 830,000 jets (Duarte et al., JINST 13 P07027, 2018). Fetched once
with scikit-learn's ``fetch_openml`` into ``data.cache_dir`` and kept there as parquet; or read
from a local copy of the same table (``data.path``: ARFF, CSV or parquet).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from pquant.config.registry import register_schema
from pquant.data.files import FilesData
from pquant.data.schema import SplitConfig
from pquant.errors import ConfigError, check_range

log = logging.getLogger(__name__)

OPENML_NAME = "hls4ml_lhc_jets_hlf"
FEATURES = ["zlogz", "c1_b0_mmdt", "c1_b1_mmdt", "c1_b2_mmdt", "c2_b1_mmdt", "c2_b2_mmdt",
            "d2_b1_mmdt", "d2_b2_mmdt", "d2_a1_b1_mmdt", "d2_a1_b2_mmdt", "m2_b1_mmdt",
            "m2_b2_mmdt", "n2_b1_mmdt", "n2_b2_mmdt", "mass_mmdt", "multiplicity"]
LABEL = "class"


def offline_message(cache_dir: Path, reason: str) -> str:
    return (
        f"data=jets: could not download OpenML {OPENML_NAME!r} into data.cache_dir={cache_dir} "
        f"({reason}); this machine looks offline. Get the table where there is network (an "
        f"ARFF, CSV or parquet export from openml.org, or the {OPENML_NAME}.parquet that a run "
        f"with network leaves in its data.cache_dir), then point data.path at it: "
        f"python -m pquant data=jets data.path=/path/to/{OPENML_NAME}.parquet")


def fetch(cache_dir: Path, timeout: float) -> Path:
    """The cached parquet copy of the table, downloading it first if needed.

    The download runs in a thread with a socket timeout and an overall bound of ``timeout``
    seconds, so an unreachable network (no DNS, dropped packets) fails fast.

    Raises:
        ConfigError: the download failed or did not finish in time (the offline message).
    """
    target = cache_dir / f"{OPENML_NAME}.parquet"
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    outcome: dict = {}

    def download() -> None:
        try:
            from sklearn.datasets import fetch_openml

            bunch = fetch_openml(OPENML_NAME, data_home=str(cache_dir / "sklearn"),
                                 as_frame=True, n_retries=1, delay=0.5)
            outcome["frame"] = bunch.frame
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            outcome["error"] = exc

    log.info("data=jets: downloading %s from OpenML into %s", OPENML_NAME, cache_dir)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(min(timeout, 30.0))
    try:
        worker = threading.Thread(target=download, name="openml-fetch", daemon=True)
        worker.start()
        worker.join(timeout)
    finally:
        socket.setdefaulttimeout(previous)
    if worker.is_alive():
        raise ConfigError(offline_message(cache_dir, f"no answer within data.download_timeout="
                                                     f"{timeout:g} s"))
    if "error" in outcome:
        exc = outcome["error"]
        raise ConfigError(offline_message(cache_dir, f"{type(exc).__name__}: {exc}"))
    frame = outcome["frame"]
    frame[LABEL] = frame[LABEL].astype(str)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, target)
    log.info("data=jets: cached %d rows in %s", len(frame), target)
    return target


class JetsData(FilesData):
    """The jet-tagging benchmark: 16 features, 5 classes.

    Args:
        path: a local copy of the OpenML table (ARFF, CSV or parquet with the 16 feature columns
            and ``class``); ``None``: the cached download (fetched on first use).
        cache_dir: where the download is kept.
        download_timeout: seconds before giving up on the network.
        val_fraction / test_fraction / split_seed / standardize: as for ``data=files``.
    """

    def __init__(self, path: str | None = None, cache_dir: str = "~/.cache/pquant/openml",
                 download_timeout: float = 120.0, val_fraction: float = 0.2,
                 test_fraction: float = 0.2, split_seed: int = 42, standardize: bool = True
                 ) -> None:
        check_range("data.download_timeout", download_timeout, lo=0, lo_open=True)
        if path is None:
            path = str(fetch(Path(cache_dir).expanduser(), float(download_timeout)))
        super().__init__(path=path, features=FEATURES, label=LABEL, task="classification",
                         standardize=standardize, val_fraction=val_fraction,
                         test_fraction=test_fraction, split_seed=split_seed)


@register_schema("data", "jets")
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
