"""Resumable runs: atomic checkpoints between epochs, loaded with ``weights_only=True``.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (nothing that needs
unpickling of classes):

* ``model``: the state dict -- weights plus every pruning method's and quantizer's state, which
  live in buffers/parameters (masks, ratios, counters, bit-widths);
* ``optimizer``, ``scheduler``: their state dicts;
* ``driver``: the :class:`~pquant.training.stages.StageDriver` position (stage/round/epoch cursor,
  events, warnings, the rewind snapshot) and ``history`` (per-epoch metrics so far);
* ``rng``: torch (CPU and CUDA), numpy and python RNG states; ``loader_generator``: the train
  loader's permutation generator;
* whatever the caller adds (the runner: the resolved config and the MLflow run id).

Writes go to a temporary file in the same directory, fsynced, then ``os.replace``-d over the
target: a run killed at any instant leaves either the previous checkpoint or the new one.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: file name of the checkpoint inside a run directory
CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = 1


def rng_state() -> dict[str, Any]:
    """Every global RNG state, as weights-only-loadable values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": int(version), "internal": list(internal),
                   "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(state: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary unpickling)."""
    state = torch.load(Path(path), map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a pquant checkpoint (format {FORMAT})")
    return state


class Checkpointer:
    """Writes a checkpoint every ``every`` epochs (counted over all stages).

    Args:
        path: the checkpoint file (normally ``<run dir>/checkpoint.pt``).
        every: epochs between checkpoints (>= 1).
        extra: saved with every checkpoint (e.g. the config and the MLflow run id).
        before_save: called before each write (the runner flushes buffered metrics, so that
            nothing logged before a checkpoint is lost if the run dies after it).
    """

    def __init__(self, path: str | Path, every: int, extra: dict[str, Any] | None = None,
                 before_save: Callable[[], None] | None = None) -> None:
        if every < 1:
            raise ValueError(f"checkpoint interval must be >= 1, got {every}")
        self.path = Path(path)
        self.every = int(every)
        self.extra = dict(extra or {})
        self.before_save = before_save

    def due(self, epochs_done: int) -> bool:
        """True after every ``every``-th completed epoch."""
        return epochs_done > 0 and epochs_done % self.every == 0

    def save(self, state: dict[str, Any]) -> None:
        if self.before_save is not None:
            self.before_save()
        save_atomic({"format": FORMAT, **self.extra, **state}, self.path)


def open_resume(run_dir: str | Path) -> dict[str, Any]:
    """The checkpoint of the unfinished run in ``run_dir`` (for ``training.resume``).

    Raises:
        ConfigError: the directory is missing, the run already finished, or it has no
            checkpoint (the message says which, and what to do).
    """
    from pquant.errors import ConfigError

    run_dir = Path(run_dir)
    where = f"training.resume={str(run_dir)!r}"
    if not run_dir.is_dir():
        raise ConfigError(f"{where}: no such directory; give the run directory of an "
                          f"unfinished run that wrote {CHECKPOINT_NAME}")
    if (run_dir / "report.json").is_file():
        raise ConfigError(f"{where}: that run already finished (its report.json is there); "
                          f"there is nothing to resume. Start a new run without "
                          f"training.resume")
    path = run_dir / CHECKPOINT_NAME
    if not path.is_file():
        raise ConfigError(f"{where}: no {CHECKPOINT_NAME} there; a run writes checkpoints only "
                          f"with training.checkpoint_every=N (N >= 1)")
    try:
        return load_checkpoint(path)
    except Exception as exc:  # noqa: BLE001 - a damaged file is one clear message
        raise ConfigError(f"{where}: cannot read {path}: {exc}") from None
