"""Optional fused CPU kernels (C++), compiled once on first use and cached.

The pure-torch implementation is the reference and is always there; these kernels compute the
same values and gradients bit for bit with fewer passes over memory and fewer autograd nodes
(a fixed-point quantizer in one pass; a quantized, masked ``nn.Linear`` -- fixed point or HGQ --
as one autograd node; HGQ's loss terms as one node). One exception: the gradients of HGQ's bit
parameters are sums over many elements, which the kernels add in their own order (float32
blocks, then float64) and the torch path in float64 -- they agree to float rounding. Tests
compare the two paths.

Control with the environment variable ``PQUANT_KERNELS``:

* ``auto`` (default) -- build on first use (about a minute, once per checkout and torch version; the build is
  cached under ``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``); if the build
  fails (no compiler), warn once and use the pure-torch path;
* ``on`` -- as ``auto``, but a failed build is an error;
* ``off`` -- always the pure-torch path.

``python -m pquant.kernels`` builds them ahead of time and prints their status.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
import warnings
from pathlib import Path

from pquant.quant.modes import RoundMode

SOURCE = Path(__file__).with_name("pquant_kernels.cpp")
CFLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off"]
#: rounding modes in the order of the C++ enum
ROUND_MODES = (RoundMode.TRN, RoundMode.RND, RoundMode.RND_CONV, RoundMode.TRN_ZERO,
               RoundMode.RND_ZERO, RoundMode.RND_MIN_INF, RoundMode.RND_INF)
ROUND_INDEX = {mode: index for index, mode in enumerate(ROUND_MODES)}
SETTINGS = ("auto", "on", "off")

_ext = None  # the module in use (None: pure torch)
_built = None  # the module once built, kept across reset()
_loaded = False
_error: str | None = None


def setting() -> str:
    value = os.environ.get("PQUANT_KERNELS", "auto").strip().lower()
    aliases = {"1": "on", "true": "on", "yes": "on", "0": "off", "false": "off", "no": "off"}
    value = aliases.get(value, value)
    if value not in SETTINGS:
        raise ValueError(f"PQUANT_KERNELS must be one of {list(SETTINGS)} (or 1/0), "
                         f"got {os.environ['PQUANT_KERNELS']!r}")
    return value


def _module_name() -> str:
    import torch

    digest = hashlib.sha256(SOURCE.read_bytes())
    digest.update(" ".join(CFLAGS).encode())
    digest.update(torch.__version__.encode())
    # one build per checkout: torch rebuilds a module whose source path changed, so two clones
    # sharing a name would rebuild each other's module on every alternation
    digest.update(str(SOURCE.resolve()).encode())
    return f"pquant_kernels_{digest.hexdigest()[:12]}"


def _build():
    from torch.utils import cpp_extension

    name = _module_name()
    build_dir = Path(cpp_extension._get_build_directory(name, verbose=False))
    fresh = not (build_dir / f"{name}.so").exists()
    if fresh:
        print("pquant: compiling the fused CPU kernels (once per checkout and torch version, about a minute; "
              "PQUANT_KERNELS=off skips them)...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    module = cpp_extension.load(name=name, sources=[str(SOURCE)], extra_cflags=CFLAGS,
                                build_directory=str(build_dir), verbose=False)
    if fresh:
        print(f"pquant: kernels built in {time.perf_counter() - start:.0f} s ({build_dir})",
              file=sys.stderr, flush=True)
    return module


def get():
    """The compiled extension module, or None when the pure-torch path is to be used."""
    global _ext, _built, _loaded, _error
    if _loaded:
        return _ext
    _loaded = True
    mode = setting()
    if mode == "off":
        _error = "disabled by PQUANT_KERNELS=off"
        return None
    if _built is not None:
        _ext = _built
        return _ext
    try:
        _ext = _build()
    except Exception as exc:  # no compiler, no ninja, broken toolchain
        _error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc) else ''}"
        if mode == "on":
            raise RuntimeError(f"PQUANT_KERNELS=on but the fused CPU kernels could not be built: "
                               f"{_error}") from exc
        warnings.warn(f"pquant: fused CPU kernels unavailable ({_error}); using the pure-torch "
                      "path (same results, slower). Set PQUANT_KERNELS=off to silence this.",
                      RuntimeWarning, stacklevel=2)
    _built = _ext
    return _ext


def status() -> str:
    """One line: whether the kernels are in use, and why not."""
    ext = get()
    if ext is not None:
        return f"fused CPU kernels: on ({ext.__name__})"
    return f"fused CPU kernels: off ({_error})"


def reset() -> None:
    """Forget the load attempt (tests switch PQUANT_KERNELS at run time)."""
    global _ext, _loaded
    _ext = None
    _loaded = False


# ----------------------------------------------------------------------------- fixed-point specs
def fixed_spec(plan, like):
    """The extension's ``FixedSpec`` for a :class:`~pquant.quant.fixed_point.QuantPlan` applied
    to tensors shaped like ``like`` -- or None when the kernels are off, the tensor is not a
    float32 CPU tensor, or the format is not one they implement (wrapping modes in eval)."""
    import torch

    ext = get()
    if ext is None or like.device.type != "cpu" or like.dtype != torch.float32:
        return None
    clip = plan.clip
    if clip is None or plan.wrap is not None:
        return None
    mode = ROUND_INDEX[plan.round_mode]
    if not isinstance(clip[0], torch.Tensor):
        return ext.FixedSpec(clip[0], clip[1], plan.scale, plan.inv_scale, mode, plan.code_clip)
    if plan.code_clip is not None:  # pragma: no cover - per-element plans have no code clip
        return None
    parts = (clip[0], clip[1], plan.scale, plan.inv_scale)
    try:
        shape = torch.broadcast_shapes(like.shape, *(p.shape for p in parts))
    except RuntimeError:
        return None
    if shape != like.shape:
        return None
    lo, hi, scale, inv = (torch.broadcast_to(p, shape).contiguous() for p in parts)
    return ext.FixedSpec.per_element(lo, hi, scale, inv, mode)
