"""Stateful fixed-point quantizer module (the format lives in buffers; the math in fixed_point).

The ``fixed`` quantizer kind (``quantization=fixed``): constant formats per tensor; weights with
``per_channel``/``per_weight`` granularity split their width per group
(:class:`~pquant.quant.range_split.RangeSplitQuantizer`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from pquant import kernels
from pquant.quant.base import Quantizer
from pquant.quant.fixed_point import bit_width, check_wrap_sm_signed, make_kernel, plan_constant
from pquant.quant.fused import fixed_spec
from pquant.quant.granularity import Granularity
from pquant.quant.modes import OverflowMode, RoundMode, as_overflow_mode, as_round_mode
from pquant.quant.range_split import RangeSplitQuantizer
from pquant.quant.registry import QuantizerConfig
from pquant.quant.spec import QuantSpec

__all__ = ["FixedPointConfig", "FixedPointQuantizer", "QuantSpec"]


@dataclass
class FixedPointConfig(QuantizerConfig):
    """Constant fixed-point formats (no settings of its own: the formats are the section's)."""

    name: ClassVar[str] = "fixed"
    _target_: str = "pquant.quant.quantizer.FixedPointQuantizer"


def _refresh_after_load(module, _incompatible_keys) -> None:
    module._refresh()


class FixedPointQuantizer(Quantizer):
    """Quantizes a tensor to the fixed-point format held in its buffers ``k``, ``i``, ``f``.

    The buffers have shape ``()`` for per-tensor formats, or any shape broadcastable to the input
    (e.g. ``(C_out, 1)`` for per-channel weights). The round and overflow modes are fixed at
    construction. Bounds and scales are precomputed per (train/eval, device, dtype) and refreshed
    when the format changes (``set_format``, ``load_state_dict``, ``.to()``), so the forward is a
    single fused autograd op.

    Attributes:
        enabled: when False the quantizer is the identity.
        bypass: granted by :func:`pquant.nn.chain.elide_redundant_quantizers` (through
            :meth:`grant_bypass`) when the input is provably already on this grid and in range,
            so the quantizer is the identity (value and gradient) and is skipped. The grant
            lapses as soon as the format of this quantizer or of one it was granted on changes
            (``set_format``, ``load_state_dict``, toggling ``enabled``, :meth:`format_changed`).
    """

    supports_bypass = True

    def __init__(
        self,
        k: float,
        i: float,
        f: float,
        round_mode: RoundMode | str = RoundMode.RND,
        overflow_mode: OverflowMode | str = OverflowMode.SAT,
        *,
        shape: tuple[int, ...] = (),
    ) -> None:
        super().__init__()
        self.round_mode = as_round_mode(round_mode)
        self.overflow_mode = as_overflow_mode(overflow_mode)
        check_wrap_sm_signed(k, self.overflow_mode)
        self._bypass: tuple | None = None  # ((quantizer, its format version), ...) of a grant
        self.register_buffer("k", torch.full(shape, float(k)))
        self.register_buffer("i", torch.full(shape, float(i)))
        self.register_buffer("f", torch.full(shape, float(f)))
        self._cache: dict = {}
        self._scalar_kif: tuple[float, float, float] | None = None
        self._refresh(initial=True)
        self.register_load_state_dict_post_hook(_refresh_after_load)

    # ---------------------------------------------------------------- flags
    @property
    def bypass(self) -> bool:
        grant = self._bypass
        if grant is None:
            return False
        for q, version in grant:
            if q._format_version != version:
                self._bypass = None
                return False
        return True

    @bypass.setter
    def bypass(self, value: bool) -> None:
        """``True`` grants a skip that depends on this quantizer's format only (an existing
        grant is kept); ``False`` withdraws it. Prefer :meth:`grant_bypass`."""
        if not value:
            self._bypass = None
        elif not self.bypass:
            self.grant_bypass(())

    def grant_bypass(self, depends_on=()) -> None:
        """Skip this quantizer until its format, or that of a quantizer in ``depends_on`` (the
        ones upstream that put the input on this grid), changes."""
        deps = [self] + [q for q in depends_on if q is not None and q is not self]
        self._bypass = tuple((q, q._format_version) for q in deps)

    # ---------------------------------------------------------------- format
    def _refresh(self, initial: bool = False) -> None:
        """Recompute cached bounds; bump the format version if the format actually changed."""
        snapshot = (self.k.detach().cpu().clone(), self.i.detach().cpu().clone(),
                    self.f.detach().cpu().clone())
        previous = getattr(self, "_format_snapshot", None)
        changed = previous is None or any(
            a.shape != b.shape or not torch.equal(a, b) for a, b in zip(previous, snapshot))
        if changed and not initial:
            self._format_version += 1
        self._format_snapshot = snapshot
        self._cache = {}
        if self.k.dim() == 0 and self.i.dim() == 0 and self.f.dim() == 0:
            self._scalar_kif = (float(self.k), float(self.i), float(self.f))
        else:
            self._scalar_kif = None

    def set_format(self, k=None, i=None, f=None) -> None:
        """Overwrite ``k``, ``i`` and/or ``f`` (numbers or tensors broadcastable to the buffers)."""
        with torch.no_grad():
            for name, value in (("k", k), ("i", i), ("f", f)):
                if value is not None:
                    getattr(self, name).copy_(torch.as_tensor(value, dtype=torch.float32))
        self._refresh()

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        self._refresh()
        return out

    def bits(self) -> torch.Tensor:
        """Total width per format element, ``k + max(i, -f) + f`` (shape of the buffers)."""
        return bit_width(self.k, self.i, self.f)

    def frozen(self) -> FixedPointQuantizer:
        return self

    # ---------------------------------------------------------------- builders
    @classmethod
    def for_parameter(cls, config, spec: QuantSpec, shape: tuple[int, ...],
                      granularity: Granularity):
        """``per_tensor``: the configured format; ``per_channel``/``per_weight``: its width,
        split per group from the weights (:class:`RangeSplitQuantizer`)."""
        if granularity is Granularity.per_tensor:
            return cls.of(spec)
        return RangeSplitQuantizer(spec.k, spec.bits, spec.round_mode, spec.overflow_mode,
                                   granularity)

    @classmethod
    def for_data(cls, config, spec: QuantSpec, feature_shape=None) -> FixedPointQuantizer:
        return cls.of(spec)

    @classmethod
    def of(cls, spec: QuantSpec, shape: tuple[int, ...] = ()) -> FixedPointQuantizer:
        """A constant-format quantizer of ``spec`` (format buffers of ``shape``)."""
        return cls(spec.k, spec.i, spec.f, spec.round_mode, spec.overflow_mode, shape=shape)

    @property
    def spec(self) -> QuantSpec | None:
        """The format as a :class:`QuantSpec` when it is per-tensor and constant, else None."""
        if self._scalar_kif is None:
            return None
        k, i, f = self._scalar_kif
        return QuantSpec(int(k), int(i), int(f), self.round_mode, self.overflow_mode)

    # ---------------------------------------------------------------- forward
    def _build(self, x: torch.Tensor, key) -> tuple:
        """(kernel, fused spec or None) for inputs like ``x`` -- cached per ``key`` (None: not
        cached -- while torch.compile/export trace, nothing is cached from traced tensors)."""
        kif = self._scalar_kif if self._scalar_kif is not None else (self.k, self.i, self.f)
        plan = plan_constant(*kif, self.round_mode, self.overflow_mode, self.training, x)
        kernel = make_kernel(plan, x)
        spec = fixed_spec(plan, x)
        if spec is not None:  # (the torch kernel where tracing reaches a cached fused one)
            quantize, tracing, slow = kernels.get().quantize, kernels.tracing, kernel
            if spec.per_element_format:  # bound to the shape it was expanded for
                shape = x.shape

                def kernel(t: torch.Tensor) -> torch.Tensor:
                    return slow(t) if t.shape != shape or tracing() else quantize(t, spec)
            else:
                def kernel(t: torch.Tensor) -> torch.Tensor:
                    return slow(t) if tracing() else quantize(t, spec)
        entry = (kernel, spec, x.shape)
        if key is not None:
            self._cache[key] = entry
        return entry

    def _kernel(self, x: torch.Tensor):
        key = (self.training, x.dtype, x.is_cuda, x.get_device())
        entry = self._cache.get(key)
        if entry is None:
            entry = self._build(x, None if kernels.tracing() else key)
        return entry[0]

    def fused_spec(self, x: torch.Tensor):
        """The fused kernels' spec of this quantizer for ``x`` (None: not fusable).

        Callers treat a disabled or bypassed quantizer as the identity before asking."""
        key = (self.training, x.dtype, x.is_cuda, x.get_device())
        entry = self._cache.get(key)
        if entry is None:
            entry = self._build(x, key)
        spec = entry[1]
        if spec is not None and spec.per_element_format and entry[2] != x.shape:
            return None
        return spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._enabled or (self._bypass is not None and self.bypass):
            return x
        return self._kernel(x)(x)

    def extra_repr(self) -> str:
        if self._scalar_kif is not None:
            k, i, f = self._scalar_kif
            fmt = f"k={k:g}, i={i:g}, f={f:g}"
        else:
            fmt = f"shape={tuple(self.k.shape)}"
        flags = "" if self.enabled else ", disabled"
        flags += ", bypass" if self.bypass else ""
        return f"{fmt}, {self.round_mode.name}, {self.overflow_mode.name}{flags}"
