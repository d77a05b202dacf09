"""What every quantizer module offers the layers, the loop, the metrics and the exporters.

The contract: a quantizer declares what it is through the class attributes and methods below --
whether its format learns (:attr:`Quantizer.learnable`) and its regulariser, its constant frozen
form (:meth:`Quantizer.frozen`), its fused-kernel spec (:meth:`Quantizer.fused_spec`) and how it is
built for a weight or a data tensor (:meth:`Quantizer.for_parameter`, :meth:`Quantizer.for_data`).
Nothing else inspects quantizer types. Kinds are chosen by ``_target_`` (see
:mod:`pquant.quant.registry`).
"""

from __future__ import annotations

import torch
from torch import nn

from pquant.quant.granularity import Granularity
from pquant.quant.modes import OverflowMode, RoundMode
from pquant.quant.spec import QuantSpec


class Quantizer(nn.Module):
    """Base class of the quantizer modules.

    Subclasses implement ``forward``, ``bits``, ``frozen`` and the builders ``for_parameter`` /
    ``for_data``. The defaults below describe a quantizer with a constant, non-learnable format.

    Attributes:
        round_mode: rounding of the codes.
        overflow_mode: behaviour outside the representable range.
        learnable: True if the bit-widths are trained (HGQ): the loss adds ``hgq_beta * EBOPs +
            hgq_gamma * regularizer`` for it, the loop calls ``on_epoch_end``.
        mean_width_regularizer: :meth:`regularizer` is the mean of :meth:`bits_for_loss` (the
            fused HGQ loss kernel can compute it).
        per_feature_data: learns one data format per feature (``data_granularity=per_feature``).
        bias_follows_granularity: biases get the weight ``granularity``; otherwise one bias
            format per tensor unless ``layer_specific`` says otherwise.
        supports_bypass: the chain analysis may skip it (constant formats).
    """

    supports_bypass = False
    learnable = False
    mean_width_regularizer = False
    per_feature_data = False
    bias_follows_granularity = False
    _format_version = 0  # (per instance once set; the default serves modules pickled before it)
    round_mode: RoundMode
    overflow_mode: OverflowMode

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._format_version = 0

    def __getstate__(self) -> dict:
        """Copies and pickles leave the derived caches behind (they may hold fused-kernel
        objects, which belong to one process); they are rebuilt on the next forward."""
        state = dict(super().__getstate__())
        state.pop("_spec", None)
        if "_cache" in state:
            state["_cache"] = {}
        return state

    # ---------------------------------------------------------------- cache keys
    @property
    def format_version(self) -> int:
        """A counter of this quantizer's own format changes (its format, its ``enabled`` flag).

        Caches derived from a quantizer (fused specs, skips granted by graph analysis) record
        it and are rebuilt when it moved on; nothing is shared between quantizers or models."""
        return self._format_version

    def format_changed(self) -> None:
        """Declare a format change made in place (e.g. bit tensors filled by hand)."""
        self._format_version += 1

    def cache_key(self) -> tuple:
        """What a cache of this quantizer's behaviour depends on: the format version, the
        train/eval mode and whether it is skipped."""
        return (self._format_version, self.training, self.bypass)

    @property
    def enabled(self) -> bool:
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        if bool(value) != self._enabled:
            self._format_version += 1
        self._enabled = bool(value)

    @property
    def bypass(self) -> bool:
        return False

    @bypass.setter
    def bypass(self, value: bool) -> None:
        if value:
            raise ValueError(f"{type(self).__name__} formats are not constant: cannot be skipped")

    @property
    def spec(self):
        """A :class:`~pquant.quant.spec.QuantSpec` when the format is per-tensor and constant."""
        return None

    @property
    def fuses_in_hgq_dense(self) -> bool:
        """Whether the fused HGQ dense kernel can run this quantizer (it then provides
        ``kernel_params()`` and ``report_bits(bits)``; see :class:`pquant.nn.dense.PQDense`)."""
        return False

    def fused_spec(self, like: torch.Tensor):
        """The fused CPU kernels' description of this quantizer for tensors like ``like``, or None
        when they cannot run it (see :mod:`pquant.kernels`; only constant formats can)."""
        return None

    def forward_relu(self, x: torch.Tensor) -> torch.Tensor:
        """``relu(self(x))`` (quantizers that can fuse the two override this)."""
        return torch.relu(self.forward(x))

    def bits(self) -> torch.Tensor:
        """Width in bits per format element (broadcastable to the quantized tensor), detached."""
        raise NotImplementedError  # pragma: no cover - abstract

    def bits_for_loss(self, memo: dict | None = None) -> torch.Tensor:
        """Width per element, differentiable w.r.t. learnable bit-widths (HGQ's EBOPs loss).

        ``memo`` (one dict per training step) lets the EBOPs and width terms share the work.
        """
        return self.bits()

    def regularizer(self, memo: dict | None = None) -> torch.Tensor | None:
        """Mean width over the format elements, for HGQ's ``hgq_gamma`` term (None if fixed)."""
        return None

    def on_epoch_end(self) -> None:
        """Called by the training loop after every epoch (HGQ clamps its bit-widths here)."""

    def frozen(self):
        """A constant-format quantizer with the current behaviour in eval (for finalisation)."""
        raise NotImplementedError  # pragma: no cover - abstract

    # ---------------------------------------------------------------- builders
    @classmethod
    def for_parameter(cls, config, spec: QuantSpec, shape: tuple[int, ...],
                      granularity: Granularity) -> Quantizer:
        """The quantizer of a weight or bias of ``shape`` (format ``spec``, configured or from
        ``layer_specific``; ``config`` is the kind's :class:`~pquant.quant.registry.
        QuantizerConfig`)."""
        raise NotImplementedError(f"{cls.__name__} does not quantize weights")

    @classmethod
    def for_data(cls, config, spec: QuantSpec,
                 feature_shape: tuple[int, ...] | None = None) -> Quantizer:
        """The quantizer of a layer input or output; ``feature_shape`` is the broadcast shape of
        per-feature formats when they are asked for (``data_granularity=per_feature``) and the
        features are known, else None."""
        raise NotImplementedError(f"{cls.__name__} does not quantize data")
