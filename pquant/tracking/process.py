"""Who owns a run: host, PID and process start time, and whether that process still lives.

A run records ``pquant.host``, ``pquant.pid`` and ``pquant.pid_start`` when it starts. Later
commands on the same host can then tell a run whose process is gone (SIGKILL, OOM killer,
``scancel -9``) from one that is still training. The start time guards against PID reuse: a new
process with the same PID has another start time.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

#: tag keys written on every run
HOST_TAG, PID_TAG, START_TAG = "pquant.host", "pquant.pid", "pquant.pid_start"


def start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, from ``/proc``), or None.

    None means "unknown" (no ``/proc``, or the process does not exist).
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else None  # field 22 of proc(5)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:][:1] in ("Z", "X")


@dataclass(frozen=True)
class ProcessId:
    """One process, identified across PID reuse."""

    host: str
    pid: int
    start: str | None

    @classmethod
    def current(cls) -> ProcessId:
        return cls(socket.gethostname(), os.getpid(), start_time(os.getpid()))

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> ProcessId | None:
        """The process recorded in a run's tags (None if the run has no such tags)."""
        if HOST_TAG not in tags or PID_TAG not in tags:
            return None
        try:
            pid = int(tags[PID_TAG])
        except ValueError:
            return None
        return cls(tags[HOST_TAG], pid, tags.get(START_TAG) or None)

    @classmethod
    def parse(cls, text: str) -> ProcessId | None:
        """Inverse of :meth:`__str__` (``host:pid:start``)."""
        host, _, rest = text.rpartition("|")
        pid, _, start = rest.partition(":")
        if not host or not pid.isdigit():
            return None
        return cls(host, int(pid), start or None)

    def __str__(self) -> str:
        return f"{self.host}|{self.pid}:{self.start or ''}"

    def tags(self) -> dict[str, str]:
        return {HOST_TAG: self.host, PID_TAG: str(self.pid), START_TAG: self.start or ""}

    def is_local(self) -> bool:
        return self.host == socket.gethostname()

    def is_gone(self) -> bool:
        """True only when this process certainly no longer runs (same host, PID dead, reused
        by another process, or a zombie). A process on another host is never called gone."""
        if not self.is_local():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # exists, owned by someone else
            pass
        except OSError:
            return False
        if _zombie(self.pid):
            return True
        if self.start is not None:
            now = start_time(self.pid)
            return now is not None and now != self.start
        return False
