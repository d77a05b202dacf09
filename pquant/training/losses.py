"""The compression losses the training loop adds to the task loss.

* Pruning regularisers (``PruningMethod.extra_loss``) -- during the TRAINING stage only.
* HGQ (``quantization.use_hgq``): ``hgq_beta * EBOPs + hgq_gamma * sum_q mean_width(q)`` --
  in every stage but pretraining. EBOPs come from the same cost functions as the report
  (:mod:`pquant.metrics.ebops`), differentiable in the learnable bit-widths, for the shapes of the
  forward just run. The width term averages over each quantizer's elements, so a per-weight
  quantizer is not pushed harder than a per-tensor one for the same ``hgq_gamma``.
"""

from __future__ import annotations

import torch
from torch import nn

from pquant import kernels
from pquant.config.sections import Sections
from pquant.nn.base import PQModule
from pquant.nn.weight_layer import CompressedWeightMixin
from pquant.pruning.base import PruningMethod, Stage
from pquant.quant.base import Quantizer
from pquant.quant.hgq import HGQQuantizer


class CompressionLoss:
    """Collects, once, the modules that contribute losses; evaluated once per step."""

    def __init__(self, model: nn.Module, s: Sections) -> None:
        q = s.quantization
        self.beta, self.gamma = float(q.hgq_beta), float(q.hgq_gamma)
        self.hgq = q.use_hgq and q.enable_quantization and (self.beta > 0 or self.gamma > 0)
        # layers whose cost is zero whatever the bits add nothing (exactly) to the EBOPs term
        self.costed = [m for m in model.modules() if isinstance(m, PQModule) and not m.cost_free]
        self.learnable = [m for m in model.modules()
                          if isinstance(m, Quantizer) and m.learnable]
        self.pruning = [m.pruning for m in model.modules()
                        if isinstance(m, CompressedWeightMixin) and m.pruning is not None
                        and type(m.pruning).extra_loss is not PruningMethod.extra_loss]

    def active(self, stage: Stage) -> bool:
        return bool((self.pruning and stage is Stage.TRAINING)
                    or (self.hgq and stage is not Stage.PRETRAINING))

    def hgq_terms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(EBOPs, summed mean widths), differentiable in the learnable bit-widths."""
        memo: dict = {}  # widths of quantizers that did not run this step: computed once
        ebops = sum((m.cost(for_loss=memo)[1] for m in self.costed
                     if m.sample_shapes is not None), torch.zeros(()))
        widths = sum((q.regularizer(memo) for q in self.learnable), torch.zeros(()))
        self.end_step()
        return ebops, widths

    def hgq_term(self) -> torch.Tensor:
        """``hgq_beta * EBOPs + hgq_gamma * widths`` (as from :meth:`hgq_terms`); one fused node
        with the kernels when every term is a float32 CPU tensor of HGQ quantizers."""
        if not all(type(q).regularizer is HGQQuantizer.regularizer for q in self.learnable):
            ebops, widths = self.hgq_terms()
            return self.beta * ebops + self.gamma * widths
        memo: dict = {}
        ebops = [m.cost(for_loss=memo)[1] for m in self.costed if m.sample_shapes is not None]
        bits = [q.bits_for_loss(memo) for q in self.learnable]
        self.end_step()
        # (the kernels are asked for only where they can run)
        if all(t.dtype is torch.float32 and t.device.type == "cpu" for t in ebops + bits):
            ext = kernels.get()
            if ext is not None:
                return ext.hgq_loss(ebops, bits, self.beta, self.gamma)[0]
        # (the composed form of the same sums, as hgq_terms adds them: CUDA, float64, no kernels)
        return (self.beta * sum(ebops, torch.zeros(()))
                + self.gamma * sum((b.mean() for b in bits), torch.zeros(())))

    def __call__(self, stage: Stage, loss: torch.Tensor) -> torch.Tensor:
        if stage is Stage.TRAINING:
            for method in self.pruning:
                term = method.extra_loss()
                if term is not None:
                    loss = loss + term
        if self.hgq and stage is not Stage.PRETRAINING:
            loss = loss + self.hgq_term().to(loss.device)
        return loss

    def end_step(self) -> None:
        for q in self.learnable:
            end = getattr(q, "end_step", None)
            if end is not None:
                end()
