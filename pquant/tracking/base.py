"""The tracker interface every other module talks to, and the no-op tracker.

A run's life: ``start`` -> ``log_metrics``/``log_artifact`` -> ``end(status)`` with status
``FINISHED``, ``FAILED`` (an exception) or ``KILLED`` (interrupted). :meth:`Tracker.track` wraps
this so that no run is ever left RUNNING.
"""

from __future__ import annotations

import contextlib
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
        model_name: registered-model name for the logged model (``finetuning.model_name``;
            None: the model is logged as a run artifact only).
    """

    enabled = False
    #: set before ``start`` to continue an existing run (``training.resume``) instead of a new one
    resume_run_id: str | None = None

    def __init__(self, experiment_name: str = "pquant", uri: str | None = None,
                 run_name: str | None = None, log_model: bool = True,
                 tags: Mapping[str, str] | None = None, model_name: str | None = None) -> None:
        self.experiment_name = experiment_name
        self.model_name = model_name
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
    def check(self) -> None:
        """Raise a clear error now if the store cannot be used (before any work is done)."""

    def start_parent(self, *, run_name: str, tags: Mapping[str, str],
                     owned: bool = True) -> str | None:
        return None

    def end_parent(self, run_id: str, status: str = "FINISHED") -> None:
        pass

    def join_parent(self, run_id: str, grace: float | None = None) -> None:
        """Register this process as one of the workers of a study's parent run."""

    def leave_parent(self, run_id: str, status: str = "FINISHED") -> str | None:
        """This worker ends; the last one ends the parent. Returns the parent's final status."""
        return None

    def log_parent_metrics(self, run_id: str, metrics: Mapping[str, float], step: int) -> None:
        pass

    # ------------------------------------------------------------------ safety
    @contextlib.contextmanager
    def track(self, **start_kwargs) -> Iterator[Tracker]:
        """Start a run; end it FINISHED, FAILED on an exception, KILLED on an interrupt
        (SIGINT/SIGTERM arrive as :class:`pquant.training.interrupt.Interrupted`)."""
        self.start(**start_kwargs)
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


class NullTracker(Tracker):
    """``tracking=none``: nothing is recorded."""
