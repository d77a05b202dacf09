"""HGQ: fixed-point quantizers with learnable bit-widths.

C. Sun et al., "HGQ: High Granularity Quantization for Real-time Neural Networks on FPGAs"
(arXiv 2405.00645). The fractional bits ``f`` (and, for the saturating modes, the integer bits
``i``) are trainable parameters -- one per tensor, per channel, per weight or per feature. The
forward uses them rounded to integers with a straight-through estimator; gradients reach them
through the rounding error (``-ln2 * (q(x) - x)`` for ``f``) and the clipping bounds (values that
saturate push ``i`` up), while the EBOPs term (``hgq_beta``) and the width regulariser
(``hgq_gamma``) push them down. With ``WRAP`` the integer bits are not learned but follow the
observed range of the data.

Parameters exist from construction, with their final shapes: an optimizer built from
``model.parameters()`` right after conversion trains them.
"""

from __future__ import annotations

import torch
from torch import nn

from pquant.quant.base import Quantizer
from pquant.quant.fixed_point import quantize
from pquant.quant.modes import OverflowMode, as_overflow_mode, as_round_mode

#: Valid range of the learnable bits (clamped after every epoch and when frozen).
F_RANGE = (-24.0, 24.0)
I_RANGE = (-23.0, 23.0)


def round_ste(t: torch.Tensor) -> torch.Tensor:
    """Round to the nearest integer (half to even) with an identity gradient."""
    return t + (torch.round(t) - t).detach()


class HGQQuantizer(Quantizer):
    """Quantizer with trainable integer/fractional bits.

    Args:
        k, i, f: initial format (``k`` stays fixed).
        round_mode, overflow_mode: as for fixed formats.
        shape: shape of the bit tensors (``()`` per tensor, ``(O, 1, ...)`` per channel, the
            weight shape per weight, ``(F,)``/``(C, 1[, 1])`` per feature).
    """

    learnable = True

    def __init__(self, k: int, i: int, f: int, round_mode, overflow_mode,
                 shape: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.round_mode = as_round_mode(round_mode)
        self.overflow_mode = as_overflow_mode(overflow_mode)
        self.register_buffer("k", torch.full(shape, float(k)))
        self.f = nn.Parameter(torch.full(shape, float(f)))
        self.learn_i = self.overflow_mode is not OverflowMode.WRAP
        if self.learn_i:
            self.i = nn.Parameter(torch.full(shape, float(i)))
        else:
            self.register_buffer("i", torch.full(shape, float(i)))

    # ------------------------------------------------------------------ bits
    def _i_f(self) -> tuple[torch.Tensor, torch.Tensor]:
        f = round_ste(self.f)
        i = round_ste(self.i) if self.learn_i else self.i
        return i, f

    def bits_for_loss(self) -> torch.Tensor:
        i, f = self._i_f()
        return self.k + torch.relu(i + f)

    def bits(self) -> torch.Tensor:
        with torch.no_grad():
            return self.k + torch.relu(torch.round(self.i) + torch.round(self.f))

    def regularizer(self) -> torch.Tensor:
        return self.bits_for_loss().mean()

    # ------------------------------------------------------------------ forward
    def _track_integer_bits(self, x: torch.Tensor, f: torch.Tensor) -> None:
        """WRAP: integer bits follow the observed range of the rounded data."""
        with torch.no_grad():
            a = x.detach().abs()
            reduce = [d for d in range(a.dim()) if d >= a.dim() - self.i.dim()
                      and self.i.shape[d - (a.dim() - self.i.dim())] == 1]
            reduce += list(range(a.dim() - self.i.dim()))
            if reduce:
                a = a.amax(dim=reduce, keepdim=True)
            a = a.reshape(self.i.shape) if a.numel() == self.i.numel() else a.amax()
            new_i = torch.ceil(torch.log2(a + torch.exp2(-f.detach()) + 1e-10))
            self.i.copy_(new_i.clamp(*I_RANGE).expand_as(self.i))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._enabled:
            return x
        i, f = self._i_f()
        if not self.learn_i and self.training:
            self._track_integer_bits(x, f)
        return quantize(x, self.k, i, f, self.round_mode, self.overflow_mode, self.training)

    def on_epoch_end(self) -> None:
        with torch.no_grad():
            self.f.clamp_(*F_RANGE)
            self.i.clamp_(*I_RANGE)

    def frozen(self):
        from pquant.quant.quantizer import FixedPointQuantizer

        with torch.no_grad():
            q = FixedPointQuantizer(0, 0, 1, self.round_mode, self.overflow_mode,
                                    shape=tuple(self.f.shape))
            q.set_format(k=self.k, i=torch.round(self.i).clamp(*I_RANGE),
                         f=torch.round(self.f).clamp(*F_RANGE))
        return q

    def extra_repr(self) -> str:
        mean_bits = float(self.bits().float().mean())
        return (f"shape={tuple(self.f.shape)}, mean bits {mean_bits:.2f}, "
                f"{self.round_mode.name}, {self.overflow_mode.name}")
