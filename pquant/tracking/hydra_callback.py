"""Hydra callback: one parent tracking run per multirun, with the jobs as its children.

``on_multirun_start`` creates the parent run and writes its id into the sweep directory
(``tracking_parent.json``); every job -- in this process or another launcher's worker -- reads it
and starts its run as a child. ``on_multirun_end`` marks the parent FINISHED. If the sweep dies
before that (a failed job re-raised by the sweeper, an interrupt), an exit handler marks it FAILED.
"""

from __future__ import annotations

import atexit
import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

PARENT_FILE = "tracking_parent.json"


def read_parent_run(sweep_dir: str | Path) -> str | None:
    """The parent run id written by :class:`SweepTrackingCallback`, if any."""
    path = Path(sweep_dir) / PARENT_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("run_id")


class SweepTrackingCallback(Callback):
    def __init__(self) -> None:
        self._tracker = None
        self._run_id: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweeper = str(OmegaConf.select(config, "hydra.sweeper._target_", default=""))
        if "pquant_optuna_sweeper" in sweeper:
            return  # the Optuna sweeper keeps one parent run per study itself
        tracker = instantiate(config.tracking)
        if not tracker.enabled:
            return
        tracker.check()  # an unreachable or unwritable store: fail before any job
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        overrides = list(OmegaConf.select(config, "hydra.overrides.task", default=[]) or [])
        run_id = tracker.start_parent(
            run_name=f"sweep {sweep_dir.name}",
            tags={"pquant.kind": "sweep", "pquant.sweep_dir": str(sweep_dir.resolve()),
                  "pquant.overrides": " ".join(overrides)[:5000]},
        )
        (sweep_dir / PARENT_FILE).write_text(json.dumps({"run_id": run_id}))
        self._tracker, self._run_id = tracker, run_id
        atexit.register(self._abort)
        log.info("tracking sweep as parent run %s", run_id)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._finish("FINISHED")

    def _abort(self) -> None:
        from pquant.training.interrupt import received

        self._finish("KILLED" if received() is not None else "FAILED")

    def _finish(self, status: str) -> None:
        if self._tracker is not None and self._run_id is not None:
            try:
                self._tracker.end_parent(self._run_id, status)
            finally:
                self._tracker = self._run_id = None
