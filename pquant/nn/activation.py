"""PQActivation: an element-wise non-linearity between an input and an output quantizer."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def _hard_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.hardtanh(x, -1.0, 1.0)


#: Functions known by name. ``odd`` marks functions with f(-x) = -f(x): their quantizers must be
#: signed, or negative inputs would be clamped away.
ACTIVATIONS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], bool]] = {
    "relu": (torch.relu, False),
    "tanh": (torch.tanh, True),
    "hard_tanh": (_hard_tanh, True),
}


class PQActivation(nn.Module):
    """``q_out(act(q_in(x)))``.

    Args:
        activation: a name from :data:`ACTIVATIONS` or any element-wise callable.
        input_quantizer: quantizer applied before the function (or None).
        output_quantizer: quantizer applied after the function (or None).
    """

    def __init__(
        self,
        activation: str | Callable[[torch.Tensor], torch.Tensor],
        *,
        input_quantizer: nn.Module | None = None,
        output_quantizer: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if isinstance(activation, str):
            if activation not in ACTIVATIONS:
                raise ValueError(
                    f"activation must be one of {sorted(ACTIVATIONS)} or a callable, "
                    f"got {activation!r}"
                )
            self.activation_name = activation
            self.fn, self.odd = ACTIVATIONS[activation]
        elif callable(activation):
            self.activation_name = getattr(activation, "__name__", type(activation).__name__)
            self.fn, self.odd = activation, False
        else:
            raise ValueError(f"activation must be a name or a callable, got {activation!r}")
        self.register_module("input_quantizer", input_quantizer)
        self.register_module("output_quantizer", output_quantizer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q_in, q_out = self.input_quantizer, self.output_quantizer
        if q_in is not None:
            x = q_in.forward(x)
        y = self.fn(x)
        if q_out is not None:
            y = q_out.forward(y)
        return y

    def extra_repr(self) -> str:
        return self.activation_name
