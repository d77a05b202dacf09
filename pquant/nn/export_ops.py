"""The neutral operations a finalised model is exported as (no ONNX or hls4ml here).

Every PQ layer type describes itself with :meth:`export_ops` (next to its own code) as a short
list of these operations; the QONNX and hls4ml writers only know these operations, never the
layer types. All tensors are numpy arrays holding the finalised model's exact values.

Shapes are *per sample* (no batch dimension) in torch's layout (channels first).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from pquant.quant.modes import OverflowMode, RoundMode


class ExportError(ValueError):
    """A model, layer or setting that cannot be exported exactly (the message says what to do)."""


@dataclass
class QuantOp:
    """A fixed-point quantizer ``(k, i, f)`` with its modes.

    Attributes:
        k, i, f: float arrays broadcastable to the per-sample tensor (shape ``()`` per tensor).
        round_mode, overflow_mode: the modes.
        where: dotted name of the quantizer (for messages and node names).
    """

    k: np.ndarray
    i: np.ndarray
    f: np.ndarray
    round_mode: RoundMode
    overflow_mode: OverflowMode
    where: str

    @property
    def i_eff(self) -> np.ndarray:
        return np.maximum(self.i, -self.f)

    @property
    def width(self) -> np.ndarray:
        return self.k + self.i_eff + self.f

    @property
    def per_tensor(self) -> bool:
        return self.k.size == 1 and self.i.size == 1 and self.f.size == 1

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lowest and highest representable value per format element."""
        hi = np.exp2(self.i_eff) - np.exp2(-self.f)
        if self.overflow_mode is OverflowMode.SAT_SYM:
            lo = -self.k * hi
        else:
            lo = -self.k * np.exp2(self.i_eff)
        return lo, hi


@dataclass
class LinearOp:
    """``y = x @ weight.T + bias`` over the last dimension; weight ``(out, in)``."""

    weight: np.ndarray
    bias: np.ndarray | None


@dataclass
class ConvOp:
    """Convolution (``nd`` = 1 or 2) with torch's semantics; weight ``(out, in/groups, *k)``."""

    nd: int
    weight: np.ndarray
    bias: np.ndarray | None
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int


@dataclass
class AffineOp:
    """Per-channel ``y = x * scale + shift`` (channel = first per-sample dimension), computed
    exactly (the eval batch norm: see :class:`pquant.nn.norm.PQBatchNorm1d`)."""

    scale: np.ndarray
    shift: np.ndarray


@dataclass
class AvgPoolOp:
    """Average pooling without padding (``nd`` = 1 or 2)."""

    nd: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]


@dataclass
class ReluOp:
    """``relu(x * 2**shift)`` (``shift``: pquant's power-of-two ReLU multiplier, else 0)."""

    shift: int = 0


@dataclass
class ReshapeOp:
    """Reshape to ``shape`` (per sample, torch layout): flatten/unflatten."""

    shape: tuple[int, ...]


@dataclass
class Step:
    """One operation of the exported chain, with its per-sample shapes and its layer's name."""

    op: object
    name: str
    in_shape: tuple[int, ...] = field(default=())
    out_shape: tuple[int, ...] = field(default=())


def quant_op(q, where: str) -> QuantOp | None:
    """The :class:`QuantOp` of a finalised quantizer, or None when it does nothing.

    Raises:
        ExportError: the quantizer is not a constant fixed-point format (model not finalised).
    """
    from pquant.quant.quantizer import FixedPointQuantizer

    if q is None or not q.enabled or q.bypass:
        return None
    if not isinstance(q, FixedPointQuantizer):
        raise ExportError(
            f"{where}: {type(q).__name__} has no constant format; export a finalised model "
            f"(pquant.finalize(model), or pquant.load_run(run_dir, final=True))")
    k, i, f = (getattr(q, n).detach().cpu().double().numpy() for n in ("k", "i", "f"))
    return QuantOp(k, i, f, q.round_mode, q.overflow_mode, where)


def array(t: torch.Tensor | None) -> np.ndarray | None:
    """A detached float32 numpy copy of ``t`` (None stays None)."""
    return None if t is None else t.detach().cpu().float().numpy().copy()
