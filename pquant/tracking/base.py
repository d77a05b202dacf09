"""The tracker interface every other module talks to, and the no-op tracker.

A run's life: ``start`` -> ``log_metrics``/``log_artifact`` -> ``end(status)`` with status
``FINISHED``, ``FAILED`` (an exception) or ``KILLED`` (interrupted). :meth:`Tracker.track` wraps
this so that no run is ever left RUNNING.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path


class Tracker:
    """Base tracker: records nothing. Subclasses override the ``_``-free methods they support.

    Args:
        experiment_name: experiment (group of runs) to record into.
        uri: tracking URI; None lets the implementation choose.
        run_name: display name of runs (None: the caller's default).
        log_model: whether to store the final state dict as an artifact.
        tags: extra tags for every run (``tracking.tags``; sweeps add the trial number).
    """

    enabled = False
    #: set before ``start`` to continue an existing run (``training.resume``) instead of a new one
    resume_run_id: str | None = None

    def __init__(self, experiment_name: str = "pquant", uri: str | None = None,
                 run_name: str | None = None, log_model: bool = True,
                 tags: Mapping[str, str] | None = None) -> None:
        self.experiment_name = experiment_name
        self.uri = uri
        self.run_name = run_name
        self.log_model = log_model
        self.tags = {str(k): str(v) for k, v in (tags or {}).items()}

    # ------------------------------------------------------------------ single run
    def start(self, *, run_name: str, params: Mapping[str, str], tags: Mapping[str, str],
              parent_run_id: str | None = None) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def log_artifact(self, path: str | Path) -> None:
        pass

    def flush(self) -> None:
        """Write buffered metrics now (before a checkpoint)."""

    def end(self, status: str = "FINISHED") -> None:
        pass

    def describe(self) -> str | None:
        """Where the run can be found, for the final summary (None: nothing recorded)."""
        return None

    # ------------------------------------------------------------------ sweeps
    def start_parent(self, *, run_name: str, tags: Mapping[str, str]) -> str | None:
        return None

    def end_parent(self, run_id: str, status: str = "FINISHED") -> None:
        pass

    def reopen_parent(self, run_id: str) -> None:
        pass

    def log_parent_metrics(self, run_id: str, metrics: Mapping[str, float], step: int) -> None:
        pass

    # ------------------------------------------------------------------ safety
    @contextlib.contextmanager
    def track(self, **start_kwargs) -> Iterator[Tracker]:
        """Start a run; end it FINISHED, FAILED on an exception, KILLED on an interrupt/SIGTERM."""
        self.start(**start_kwargs)
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            yield self
        except (KeyboardInterrupt, SystemExit):
            self.end("KILLED")
            raise
        except BaseException:
            self.end("FAILED")
            raise
        else:
            self.end("FINISHED")
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum, frame):  # pragma: no cover - exercised through a subprocess
    raise KeyboardInterrupt(f"signal {signum}")


class NullTracker(Tracker):
    """``tracking=none``: nothing is recorded."""
