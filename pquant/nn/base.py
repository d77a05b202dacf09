"""What every PQ layer shares: input/output quantizers, recorded shapes, bit-widths, freezing."""

from __future__ import annotations

import torch

from pquant.quant.base import Quantizer

FLOAT_BITS = 32.0


def _zero(like: torch.Tensor | None = None) -> torch.Tensor:
    return torch.zeros((), device=None if like is None else like.device)


class PQModule:
    """Mixin for every PQ layer (combine with ``nn.Module`` or the torch layer class).

    Attributes:
        input_quantizer: quantizer of the layer input, or None.
        output_quantizer: quantizer of the layer output, or None.
        finalized: True after :meth:`finalize` (quantizers frozen, weights baked).
    """

    input_quantizer: Quantizer | None
    output_quantizer: Quantizer | None

    def _init_io(self, input_quantizer: Quantizer | None,
                 output_quantizer: Quantizer | None) -> None:
        self.register_module("input_quantizer", input_quantizer)
        self.register_module("output_quantizer", output_quantizer)
        self._shapes: tuple[torch.Size, torch.Size] | None = None
        # (quantizer,) of the nearest upstream quantizer when this layer has none on its input
        # (set by the chain analysis; a tuple so it is not registered as a sub-module)
        self._upstream: tuple[Quantizer] | None = None
        self.finalized = False

    # ------------------------------------------------------------------ forward helpers
    def _quantize_in(self, x: torch.Tensor) -> torch.Tensor:
        q = self.input_quantizer
        return x if q is None else q.forward(x)

    def _quantize_out(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        q = self.output_quantizer
        if q is not None:
            y = q.forward(y)
        self.__dict__["_shapes"] = (x.shape, y.shape)  # (plain attribute; skips Module.__setattr__)
        return y

    # ------------------------------------------------------------------ shapes and bits
    @property
    def sample_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
        """Per-sample (no batch) input and output shapes of the last forward, or None."""
        if self._shapes is None:
            return None
        return tuple(self._shapes[0][1:]), tuple(self._shapes[1][1:])

    @staticmethod
    def _bits_of(q: Quantizer | None, for_loss) -> torch.Tensor | None:
        """Bits of ``q``; ``for_loss`` True (or a per-step memo dict) -> differentiable."""
        if q is None or not q.enabled:
            return None
        if isinstance(for_loss, dict):
            return q.bits_for_loss(for_loss)
        return q.bits_for_loss() if for_loss else q.bits()

    def input_bits(self, for_loss: bool = False) -> torch.Tensor:
        """Bits of the input: its quantizer's, else the nearest upstream quantizer's, else 32."""
        bits = self._bits_of(self.input_quantizer, for_loss)
        if bits is None and self._upstream is not None:
            bits = self._bits_of(self._upstream[0], False)
        return bits if bits is not None else torch.tensor(FLOAT_BITS)

    def output_bits(self, for_loss: bool = False) -> torch.Tensor:
        bits = self._bits_of(self.output_quantizer, for_loss)
        return bits if bits is not None else torch.tensor(FLOAT_BITS)

    def quantizers(self):
        """``(role, quantizer)`` for every quantizer of this layer that is present."""
        for role in ("input", "weight", "bias", "output"):
            q = getattr(self, f"{role}_quantizer", None)
            if q is not None:
                yield role, q

    #: True when the layer computes ``relu`` (the chain analysis and the fx dataflow analysis
    #: follow a grid through it; see :class:`pquant.nn.activation.PQActivation`)
    computes_relu = False

    # ------------------------------------------------------------------ cost
    #: True when :meth:`cost` is zero whatever the bit-widths (the HGQ loss skips the layer)
    cost_free = False

    def cost(self, for_loss: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(BOPs, EBOPs) per sample for the shapes of the last forward (zero if none yet).

        ``for_loss``: False (report), True or a per-step memo dict (differentiable in the
        learnable bit-widths; with a dict -- the HGQ loss -- BOPs may be None)."""
        return _zero(), _zero()

    # ------------------------------------------------------------------ export
    def export_ops(self, name: str) -> list:
        """This layer as neutral export operations (see :mod:`pquant.nn.export_ops`): its input
        quantizer, :meth:`export_body`, its output quantizer (absent or skipped ones left out)."""
        from pquant.nn.export_ops import quant_op

        ops = [quant_op(self.input_quantizer, f"{name}.input_quantizer"),
               *self.export_body(name),
               quant_op(self.output_quantizer, f"{name}.output_quantizer")]
        return [op for op in ops if op is not None]

    def export_body(self, name: str) -> list:
        """The layer's own computation as export operations (the export rule of the type).

        Raises:
            ExportError: this layer type (or this configuration of it) has no exact export.
        """
        from pquant.nn.export_ops import ExportError

        raise ExportError(f"layer {name!r} ({type(self).__name__}) has no export rule: it cannot "
                          f"be exported to QONNX/hls4ml; replace it or leave it out of the model")

    # ------------------------------------------------------------------ finalisation
    def finalize(self) -> None:
        """Freeze the I/O quantizers to constant formats (see :func:`pquant.nn.finalize`)."""
        for role in ("input", "output"):
            q = getattr(self, f"{role}_quantizer")
            if q is not None:
                frozen = q.frozen()
                frozen.enabled = q.enabled
                frozen.bypass = q.bypass
                setattr(self, f"{role}_quantizer", frozen)
        self.finalized = True

