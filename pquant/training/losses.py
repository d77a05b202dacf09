"""The compression losses the training loop adds to the task loss.

* Pruning regularisers (``PruningMethod.extra_loss``) -- during the TRAINING stage only.
* HGQ (learnable quantizers, ``quantization=hgq``): ``hgq_beta * EBOPs + hgq_gamma * sum_q
  regularizer(q)`` (HGQ's: the mean width) -- in every stage but pretraining. EBOPs come from
  the same cost functions as the report (:mod:`pquant.nn.ebops`), differentiable in the
  learnable bit-widths, for the shapes of the forward just run. The width term averages over each quantizer's elements, so a per-weight
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
from pquant.quant.costs import StepCosts, deactivate


class CompressionLoss:
    """Collects, once, the modules that contribute losses; evaluated once per step.

    It owns the step's cost collector (:class:`~pquant.quant.costs.StepCosts`), active during
    every forward of ``model`` (a pre-hook and an always-called hook on it): the widths and
    EBOPs the forward computes anyway (HGQ quantizers, the fused HGQ dense kernel) are reported
    there and reused by the loss, which clears the collector once it has built the step's terms.
    A forward outside ``model``'s own call (a sub-module called directly) reports nothing and
    the loss recomputes the same values. Call :meth:`close` to remove the hooks.
    """

    def __init__(self, model: nn.Module, s: Sections) -> None:
        q = s.quantization
        self.beta, self.gamma = float(q.hgq_beta), float(q.hgq_gamma)
        # layers whose cost is zero whatever the bits add nothing (exactly) to the EBOPs term
        self.costed = [m for m in model.modules() if isinstance(m, PQModule) and not m.cost_free]
        self.learnable = [m for m in model.modules()
                          if isinstance(m, Quantizer) and m.learnable]
        # the HGQ terms: learnable bit-widths (from the section's quantizer or a layer_specific
        # one) and a non-zero weight
        self.hgq = (bool(self.learnable) and q.enable_quantization
                    and (self.beta > 0 or self.gamma > 0))
        self.pruning = [m.pruning for m in model.modules()
                        if isinstance(m, CompressedWeightMixin) and m.pruning is not None
                        and type(m.pruning).extra_loss is not PruningMethod.extra_loss]
        self.costs = StepCosts()
        self._handles: list = []
        if self.hgq:
            self._collect_during(model)

    def _collect_during(self, model: nn.Module) -> None:
        costs, tokens = self.costs, []

        def start(module, args):  # (plain closures: a deep copy of the model shares them)
            costs.clear()  # a new step (the previous one's loss, if any, has been built)
            tokens.append(costs.activate())

        def stop(module, args, output):
            if tokens:
                deactivate(tokens.pop())

        self._handles = [model.register_forward_pre_hook(start),
                         model.register_forward_hook(stop, always_call=True)]

    def collecting(self):
        """A context in which every forward reports into this loss's collector (a new step):
        for forwards that do not go through ``model``'s own call (e.g. a Lightning
        ``training_step`` calling an inner module)."""
        self.costs.clear()
        return self.costs.collecting()

    def close(self) -> None:
        """Remove the collector's hooks from the model (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.costs.clear()

    def active(self, stage: Stage) -> bool:
        return bool((self.pruning and stage is Stage.TRAINING)
                    or (self.hgq and stage is not Stage.PRETRAINING))

    def hgq_terms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(EBOPs, summed regularisers), differentiable in the learnable bit-widths."""
        memo = self.costs  # reported this step; widths computed here are added once
        ebops = sum((m.cost(for_loss=memo)[1] for m in self.costed
                     if m.sample_shapes is not None), torch.zeros(()))
        widths = sum((q.regularizer(memo) for q in self.learnable), torch.zeros(()))
        self.costs.clear()
        return ebops, widths

    def hgq_term(self) -> torch.Tensor:
        """``hgq_beta * EBOPs + hgq_gamma * widths`` (as from :meth:`hgq_terms`); one fused node
        with the kernels when every term is a float32 CPU tensor and every regulariser is the
        mean width (:attr:`~pquant.quant.base.Quantizer.mean_width_regularizer`)."""
        if not all(q.mean_width_regularizer for q in self.learnable):
            ebops, widths = self.hgq_terms()
            return self.beta * ebops + self.gamma * widths
        memo = self.costs
        ebops = [m.cost(for_loss=memo)[1] for m in self.costed if m.sample_shapes is not None]
        bits = [q.bits_for_loss(memo) for q in self.learnable]
        self.costs.clear()
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
