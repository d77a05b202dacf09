"""PQActivation: an element-wise non-linearity between an input and an output quantizer."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pquant.nn.base import PQModule
from pquant.nn.ebops import lut_cost
from pquant.quant.hgq import round_ste


@dataclass(frozen=True)
class ActivationInfo:
    """How a function behaves, for choosing its quantizers and its cost.

    Attributes:
        fn: the function.
        signed_input: negative inputs matter (else an unsigned input quantizer loses nothing).
        output_range: ``(lo, hi)`` bounds of the output if bounded, else None.
        free: costs no lookup table in hardware (comparisons and shifts only).
    """

    fn: Callable[[torch.Tensor], torch.Tensor]
    signed_input: bool
    output_range: tuple[float, float] | None
    free: bool


def _hard_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.hardtanh(x, -1.0, 1.0)


#: Functions known by name (plus ``leaky_relu``, ``gelu`` and ``softmax``, which take options).
ACTIVATIONS: dict[str, ActivationInfo] = {
    "relu": ActivationInfo(torch.relu, False, None, True),
    "tanh": ActivationInfo(torch.tanh, True, (-1.0, 1.0), False),
    "hard_tanh": ActivationInfo(_hard_tanh, True, (-1.0, 1.0), True),
    "sigmoid": ActivationInfo(torch.sigmoid, True, (0.0, 1.0), False),
    "leaky_relu": ActivationInfo(F.leaky_relu, True, None, True),
    "gelu": ActivationInfo(F.gelu, True, None, False),
    "softmax": ActivationInfo(F.softmax, True, (0.0, 1.0), False),
}

#: The reference's fixed-point friendly leaky-ReLU slope (13/128).
DEFAULT_LEAKY_SLOPE = 0.1015625


def activation_info(name: str, *, negative_slope: float = DEFAULT_LEAKY_SLOPE,
                    approximate: str = "none", dim: int = -1) -> ActivationInfo:
    """The :class:`ActivationInfo` of a named function, with its options bound."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)} or a callable, "
                         f"got {name!r}")
    info = ACTIVATIONS[name]
    if name == "leaky_relu":
        return ActivationInfo(functools.partial(F.leaky_relu, negative_slope=negative_slope),
                              True, None, True)
    if name == "gelu":
        return ActivationInfo(functools.partial(F.gelu, approximate=approximate), True, None,
                              False)
    if name == "softmax":
        return ActivationInfo(functools.partial(F.softmax, dim=dim), True, (0.0, 1.0), False)
    return info


class PQActivation(PQModule, nn.Module):
    """``q_out(act(q_in(x)))``.

    Args:
        activation: a name (``relu``, ``tanh``, ``hard_tanh``, ``sigmoid``, ``leaky_relu``,
            ``gelu``, ``softmax``) or any element-wise callable.
        input_quantizer: quantizer applied before the function (or None).
        output_quantizer: quantizer applied after the function (or None).
        negative_slope, approximate, dim: options of leaky_relu, gelu, softmax.
        relu_multiplier: relu only -- a learnable power-of-two pre-scale ``x * 2**round(m)``
            (``use_relu_multiplier``), initialised to 0 (identity).
    """

    def __init__(
        self,
        activation: str | Callable[[torch.Tensor], torch.Tensor],
        *,
        input_quantizer: nn.Module | None = None,
        output_quantizer: nn.Module | None = None,
        negative_slope: float = DEFAULT_LEAKY_SLOPE,
        approximate: str = "none",
        dim: int = -1,
        relu_multiplier: bool = False,
    ) -> None:
        nn.Module.__init__(self)
        if isinstance(activation, str):
            self.info = activation_info(activation, negative_slope=negative_slope,
                                        approximate=approximate, dim=dim)
            self.activation_name = activation
        elif callable(activation):
            name = getattr(activation, "__name__", type(activation).__name__)
            self.info = ActivationInfo(activation, True, None, False)
            self.activation_name = str(name).lower()
        else:
            raise ValueError(f"activation must be a name or a callable, got {activation!r}")
        self.fn = self.info.fn
        self.options = {"negative_slope": negative_slope, "approximate": approximate, "dim": dim}
        if relu_multiplier and self.activation_name != "relu":
            raise ValueError("relu_multiplier is only defined for relu")
        self.multiplier = nn.Parameter(torch.zeros(())) if relu_multiplier else None
        self._init_io(input_quantizer, output_quantizer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = x
        if self.multiplier is not None:
            xs = x * torch.exp2(round_ste(self.multiplier))
        modules = self._modules  # (read directly: this runs once per layer and step)
        q_in, q_out = modules["input_quantizer"], modules["output_quantizer"]
        if q_in is None:
            y = self.fn(xs)
        elif self.fn is torch.relu:
            y = q_in.forward_relu(xs)  # (one pass where the quantizer fuses it)
        else:
            y = self.fn(q_in.forward(xs))
        if q_out is not None:
            y = q_out.forward(y)
        self.__dict__["_shapes"] = (x.shape, y.shape)
        return y

    def export_body(self, name: str) -> list:
        """Export rule: ReLU (exact everywhere); other functions are refused (their float
        results have no exact fixed-point counterpart without a lookup table)."""
        from pquant.nn.export_ops import ExportError, ReluOp

        if self.fn is not torch.relu:
            raise ExportError(
                f"layer {name!r}: activation {self.activation_name!r} is not exported (only relu "
                f"is exact in both QONNX and hls4ml); use model.activation=relu")
        if self.multiplier is not None and float(torch.round(self.multiplier)) != 0.0:
            raise ExportError(
                f"layer {name!r}: the ReLU multiplier (2**{float(torch.round(self.multiplier)):g}"
                f") is not exported; set quantization.use_relu_multiplier=false")
        return [ReluOp()]

    @property
    def computes_relu(self) -> bool:
        return self.activation_name == "relu"

    @property
    def cost_free(self) -> bool:
        return self.info.free

    def cost(self, for_loss: bool = False):
        shapes = self.sample_shapes
        if shapes is None or self.info.free:
            return super().cost(for_loss)
        channel_dim = 0 if len(shapes[0]) > 1 else None
        ebops = lut_cost(self.input_bits(for_loss), self.output_bits(for_loss), shapes[0],
                         channel_dim)
        return ebops, ebops

    def extra_repr(self) -> str:
        return self.activation_name
