"""SIGINT/SIGTERM as a flag checked at batch boundaries, so every interrupt stops a run cleanly.

A ``KeyboardInterrupt`` raised from inside the signal handler can land anywhere -- in a garbage
collector finaliser it is printed as "Exception ignored" and lost, and training goes on. Inside
:func:`handle_signals` the first SIGINT or SIGTERM only records the signal; the training loop
(every batch), the runner and the sweeper call :func:`check`, which raises :class:`Interrupted`
at a safe point. A second signal raises at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_pending: int | None = None
_received: int | None = None  # last signal seen by this process (never reset)
_installed = False


class Interrupted(KeyboardInterrupt):
    """A run was stopped by SIGINT or SIGTERM."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


def _handler(signum, frame) -> None:  # pragma: no cover - exercised through subprocesses
    global _pending, _received
    _received = signum
    if _pending is not None:
        raise Interrupted(signum)
    _pending = signum


def pending() -> int | None:
    """The signal received and not yet acted upon (None: none)."""
    return _pending


def received() -> int | None:
    """The last SIGINT/SIGTERM this process received inside :func:`handle_signals`, if any."""
    return _received


def check() -> None:
    """Raise :class:`Interrupted` if SIGINT/SIGTERM arrived (no-op otherwise)."""
    if _pending is not None:
        raise Interrupted(_pending)


@contextlib.contextmanager
def handle_signals() -> Iterator[None]:
    """Turn SIGINT/SIGTERM into a pending flag for the duration of the block.

    Nested use and use outside the main thread are no-ops. A signal that arrived but was not
    acted upon inside the block is raised as :class:`Interrupted` when the block ends.
    """
    global _installed, _pending
    if _installed or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handler) for s in _SIGNALS}
    _installed = True
    try:
        yield
        check()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _installed = False
        _pending = None
