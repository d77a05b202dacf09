"""Optional fused CPU kernels (C++), compiled once on first use and cached.

The pure-torch implementation is the reference and is always there; these kernels compute the
same values and gradients bit for bit with fewer passes over memory and fewer autograd nodes
(a fixed-point quantizer in one pass; a quantized, masked ``nn.Linear`` -- fixed point or HGQ --
as one autograd node; HGQ's loss terms as one node). One exception: the gradients of HGQ's bit
parameters are sums over many elements, which the kernels add in their own order (float32
blocks, then float64) and the torch path in float64 -- they agree to float rounding. Tests
compare the two paths.

Control with the environment variable ``PQUANT_KERNELS``:

* ``auto`` (default) -- use them when they are built. When they are not, the run starts at once on
  the pure-torch path and a detached background process builds them for the runs that follow
  (about a minute, once per checkout and torch version; cached under ``TORCH_EXTENSIONS_DIR``,
  default ``~/.cache/torch_extensions``). A failed build is remembered (per source, torch version
  and compiler) and reported in one line, not retried;
* ``on`` -- build them in the foreground if needed; a failed build is an error;
* ``off`` -- always the pure-torch path.

They are only ever asked for where they can run: float32 tensors on the CPU, outside
``torch.compile``/``torch.export``/``torch.fx`` tracing (there the traceable torch path is taken).
``python -m pquant.kernels`` builds them ahead of time (retrying a failed build) and prints their
status. Building is in :mod:`pquant.kernels.build`.
"""

from __future__ import annotations

import os

import torch

from pquant.kernels import build as _b
from pquant.kernels.build import CFLAGS, SOURCE, BuildError  # noqa: F401  (re-exported)

SETTINGS = ("auto", "on", "off")
_F32 = torch.float32

_fx_tracing = getattr(torch.fx._symbolic_trace, "is_fx_symbolic_tracing",
                      lambda: torch.fx._symbolic_trace._is_fx_tracing_flag)

_ext = None  # the module in use (None: pure torch)
_built = None  # the module once loaded, kept across reset()
_loaded = False
_error: str | None = None
_said: set[str] = set()  # messages already printed by this process


def setting() -> str:
    value = os.environ.get("PQUANT_KERNELS", "auto").strip().lower()
    aliases = {"1": "on", "true": "on", "yes": "on", "0": "off", "false": "off", "no": "off"}
    value = aliases.get(value, value)
    if value not in SETTINGS:
        raise ValueError(f"PQUANT_KERNELS must be one of {list(SETTINGS)} (or 1/0), "
                         f"got {os.environ['PQUANT_KERNELS']!r}")
    return value


def tracing() -> bool:
    """Whether torch.compile, torch.export or torch.fx is tracing: the kernels step aside."""
    return (torch.compiler.is_compiling() or torch.compiler.is_exporting()
            or _fx_tracing())


def _say_once(message: str) -> None:
    if message not in _said:
        _said.add(message)
        _b._say(message)


def _load() -> None:
    """Decide this process's path (until :func:`reset`)."""
    global _ext, _built, _loaded, _error
    _loaded = True
    mode = setting()
    if mode == "off":
        _error = "disabled by PQUANT_KERNELS=off"
        return
    if _built is None:
        try:
            if mode == "on":
                _built = _b.build()
            else:
                paths = _b.Paths()
                _built = _b.load_built(paths)
                if _built is None:
                    _error = _b.build_in_background(paths)
                    _say_once(_error)
        except BuildError as exc:
            _error = str(exc)
            if mode == "on":
                raise RuntimeError(f"PQUANT_KERNELS=on but the fused CPU kernels could not be "
                                   f"built: {exc}") from exc
            _say_once(f"fused CPU kernels unavailable ({exc}); using the torch path")
    _ext = _built


def get():
    """The compiled extension module, or None when the pure-torch path is to be used.

    Callers ask only for float32 CPU tensors (check the device and dtype first: asking may start
    a build). Under tracing this is None."""
    if not _loaded:
        _load()
    if _ext is not None and tracing():
        return None
    return _ext


def prepare(device: torch.device, dtype: torch.dtype) -> str:
    """Decide a run's path at its start: ``"fused"`` or ``"torch"``.

    Nothing is built (or loaded) for a run that could not use the kernels -- a device other than
    the CPU, a dtype other than float32 --; in ``auto`` mode a run never waits for a build."""
    global _loaded, _error
    reset()
    if setting() != "off" and (torch.device(device).type != "cpu" or dtype is not _F32):
        _loaded, _error = True, f"not used for {torch.device(device).type} {dtype} models"
        return "torch"
    return "fused" if get() is not None else "torch"


def status() -> str:
    """One line: whether the kernels are in use, and why not."""
    ext = get()
    if ext is not None:
        return f"fused CPU kernels: on ({ext.__name__})"
    return f"fused CPU kernels: off ({_error})"


def reset() -> None:
    """Forget the decision (a new run decides again; tests switch PQUANT_KERNELS at run time)."""
    global _ext, _loaded, _error
    _ext = None
    _loaded = False
    _error = None
