"""Building and caching the fused CPU kernels: never a hang, never a repeated failure.

Layout, under ``$TORCH_EXTENSIONS_DIR/pquant/<module name>/`` (default root
``~/.cache/torch_extensions``):

* ``<name>.so`` -- the built module. It only ever appears complete: each build compiles in a
  private temporary folder next to it and moves the result into place with one atomic rename;
* ``build.lock`` -- a ``flock`` held by the process that is building (and its pid, for messages).
  The operating system releases it when that process ends, however it ends (Ctrl-C, a kill, an
  out-of-memory kill, ``scancel``): a lock whose owner is gone never blocks anyone. A process that
  wants the module waits for a running build at most :data:`WAIT_S` seconds (saying so on stderr),
  then builds on its own (privately, so nothing clashes);
* ``failed.json`` -- a failed build, keyed by the module name (source, flags, torch version) and
  the compiler; other processes do not repeat it. ``python -m pquant.kernels`` retries;
* ``build.log`` -- the output of the last background build.

The module name hashes the C++ source, the flags, the torch version and the source's path.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

SOURCE = Path(__file__).with_name("pquant_kernels.cpp")
#: ``-fopenmp``: torch's ``at::parallel_for`` runs serially in an extension built without it
CFLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off", "-fopenmp"]
LDFLAGS = ["-fopenmp"]
#: longest wait (s) for another process's build before building privately
WAIT_S = 900.0
#: seconds between "still waiting" messages
WAIT_NOTE_S = 30.0
RETRY = "run `python -m pquant.kernels` to retry"


class BuildError(RuntimeError):
    """The kernels could not be built (the message says why, in one line)."""


def _say(message: str) -> None:
    print(f"pquant: {message}", file=sys.stderr, flush=True)


def compiler() -> str:
    """The C++ compiler command torch's extension builder uses (``$CXX``, default ``c++``)."""
    return os.environ.get("CXX", "c++")


def compiler_id() -> str:
    """The compiler as a key: its command, resolved path, size and modification time."""
    words = shlex.split(compiler()) or ["c++"]
    path = shutil.which(words[0])
    if path is None:
        return f"{compiler()}|missing"
    st = os.stat(path)
    return f"{compiler()}|{os.path.realpath(path)}|{st.st_size}|{st.st_mtime_ns}"


def module_name() -> str:
    import torch

    digest = hashlib.sha256(SOURCE.read_bytes())
    digest.update(" ".join(CFLAGS + LDFLAGS).encode())
    digest.update(torch.__version__.encode())
    # one build per checkout: two clones may hold different sources under one version
    digest.update(str(SOURCE.resolve()).encode())
    return f"pquant_kernels_{digest.hexdigest()[:12]}"


def root() -> Path:
    from torch.utils import cpp_extension

    base = os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()
    return Path(base) / "pquant"


class Paths:
    """Where one module's files live."""

    def __init__(self) -> None:
        self.name = module_name()
        self.dir = root() / self.name
        self.so = self.dir / f"{self.name}.so"
        self.lock = self.dir / "build.lock"
        self.failure = self.dir / "failed.json"
        self.log = self.dir / "build.log"

    def failure_key(self) -> str:
        return f"{self.name}|{compiler_id()}"


# ----------------------------------------------------------------------------- failures on disk
def recorded_failure(paths: Paths) -> str | None:
    """The error of an earlier failed build with this source, torch and compiler, or None."""
    try:
        record = json.loads(paths.failure.read_text())
    except (OSError, ValueError):
        return None
    if record.get("key") != paths.failure_key():
        return None
    return str(record.get("error", "build failed"))


def record_failure(paths: Paths, error: str) -> None:
    paths.dir.mkdir(parents=True, exist_ok=True)
    tmp = paths.dir / f"failed.json.{os.getpid()}"
    tmp.write_text(json.dumps({"key": paths.failure_key(), "error": error, "time": time.time()}))
    os.replace(tmp, paths.failure)


def clear_failure(paths: Paths) -> None:
    with contextlib.suppress(FileNotFoundError):
        paths.failure.unlink()


def probe_compiler() -> str | None:
    """Why no build can succeed here (no compiler, no ninja), or None. Takes milliseconds."""
    from torch.utils import cpp_extension

    words = shlex.split(compiler()) or ["c++"]
    try:
        done = subprocess.run([*words, "--version"], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"no working C++ compiler ({compiler()!r}: {type(exc).__name__})"
    if done.returncode != 0:
        return f"no working C++ compiler (`{compiler()} --version` exited {done.returncode})"
    if not cpp_extension.is_ninja_available():
        return "ninja is not installed (pip install ninja)"
    return None


# ----------------------------------------------------------------------------- lock
class BuildLock:
    """An exclusive ``flock`` on ``build.lock``; released by the OS when its holder ends."""

    def __init__(self, paths: Paths) -> None:
        self.path = paths.lock
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: private builds only, no lock
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self._fd = fd
        return True

    def acquire(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds, saying so on stderr; False when it timed out."""
        start = time.monotonic()
        next_note = start
        while not self.try_acquire():
            now = time.monotonic()
            if now - start >= timeout:
                _say(f"gave up waiting after {timeout:.0f} s for the kernel build of "
                     f"{self.holder()}; building them separately")
                return False
            if now >= next_note:
                _say(f"waiting for the kernel build of {self.holder()} to finish "
                     f"({now - start:.0f} s so far, at most {timeout:.0f} s)")
                next_note = now + WAIT_NOTE_S
            time.sleep(0.5)
        return True

    def busy(self) -> bool:
        """Whether another process holds the lock right now."""
        if self.try_acquire():
            self.release()
            return False
        return True

    def holder(self) -> str:
        try:
            pid, host = self.path.read_text().split()[:2]
        except (OSError, ValueError):
            return "another process"
        return f"process {pid}" + ("" if host == socket.gethostname() else f" on {host}")

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # (closing releases the flock)
            self._fd = None


# ----------------------------------------------------------------------------- load and build
def load_built(paths: Paths):
    """The built module, imported from the cache, or None when it is not there yet."""
    if not paths.so.exists():
        return None
    try:
        spec = importlib.util.spec_from_file_location(paths.name, paths.so)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except (ImportError, OSError) as exc:
        raise BuildError(f"cannot load {paths.so} ({exc}); {RETRY}") from exc
    return module


def _clean_stale_folders(paths: Paths) -> None:
    """Remove the temporary folders of builds on this host whose process is gone."""
    host = socket.gethostname()
    for folder in paths.dir.glob("tmp-*"):
        parts = folder.name.split("-", 3)  # tmp-<host>-<pid>-<n>
        if len(parts) != 4 or parts[1] != host:
            continue
        try:
            os.kill(int(parts[2]), 0)
        except (ProcessLookupError, ValueError):
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:
            pass


def _compile(paths: Paths, quiet: bool):
    """Compile in a private folder and move the module into place; record a failure."""
    from torch.utils import cpp_extension

    _clean_stale_folders(paths)
    folder = paths.dir / f"tmp-{socket.gethostname()}-{os.getpid()}-{time.monotonic_ns()}"
    folder.mkdir(parents=True)
    if not quiet:
        _say("compiling the fused CPU kernels (once per checkout and torch version, about a "
             "minute; PQUANT_KERNELS=off skips them)...")
    start = time.perf_counter()
    try:
        module = cpp_extension.load(name=paths.name, sources=[str(SOURCE)], extra_cflags=CFLAGS,
                                    extra_ldflags=LDFLAGS, build_directory=str(folder),
                                    verbose=False)
        os.replace(folder / paths.so.name, paths.so)  # atomic: the module is there or not
    except Exception as exc:  # no compiler, no ninja, a compile error
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        error = f"{type(exc).__name__}: {lines[-1] if lines else ''}"[:300]
        record_failure(paths, error)
        raise BuildError(error) from exc
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    clear_failure(paths)
    if not quiet:
        _say(f"kernels built in {time.perf_counter() - start:.0f} s ({paths.so})")
    return module


def build(wait_s: float | None = None, retry: bool = False, quiet: bool = False):
    """The module, built now if needed (in this process, waiting at most ``wait_s`` seconds for
    another process's build). Raises :class:`BuildError` -- also for a failure recorded on disk,
    unless ``retry``."""
    paths = Paths()
    try:
        module = load_built(paths)
    except BuildError:
        if not retry:
            raise
        paths.so.unlink()
        module = None
    if module is not None:
        return module
    if retry:
        clear_failure(paths)
    error = recorded_failure(paths)
    if error is not None:
        raise BuildError(f"{error} (an earlier build; {RETRY})")
    lock = BuildLock(paths)
    locked = lock.acquire(WAIT_S if wait_s is None else wait_s)
    try:
        module = load_built(paths)  # built by the process we waited for?
        if module is not None:
            return module
        error = recorded_failure(paths)
        if error is not None:
            raise BuildError(f"{error} ({RETRY})")
        return _compile(paths, quiet)
    finally:
        if locked:
            lock.release()


def build_in_background(paths: Paths) -> str:
    """Start a detached process that builds the module for later runs, unless one is running,
    a build failed before or none can succeed here. Returns a one-line account."""
    error = recorded_failure(paths)
    if error is None:
        error = probe_compiler()
        if error is not None:
            record_failure(paths, error)
    if error is not None:
        return (f"fused CPU kernels unavailable ({error}); using the torch path (same results, "
                f"slower); {RETRY}, PQUANT_KERNELS=off to silence this")
    lock = BuildLock(paths)
    if lock.busy():
        return (f"fused CPU kernels are being built by {lock.holder()}; this run uses the torch "
                "path, later runs will use them")
    paths.dir.mkdir(parents=True, exist_ok=True)
    with open(paths.log, "ab") as log:
        subprocess.Popen([sys.executable, "-m", "pquant.kernels", "--background"],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                         start_new_session=True, close_fds=True)
    return ("fused CPU kernels not built yet: this run uses the torch path; building them in the "
            f"background for later runs (log: {paths.log})")


def background_main() -> int:
    """The detached builder: build unless another process is at it (then leave it alone)."""
    paths = Paths()
    lock = BuildLock(paths)
    if not lock.try_acquire():
        return 0
    try:
        if paths.so.exists() or recorded_failure(paths) is not None:
            return 0
        _compile(paths, quiet=False)
    except BuildError as exc:
        _say(f"kernel build failed: {exc}")
        return 1
    finally:
        lock.release()
    return 0
