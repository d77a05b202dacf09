"""Distillation losses on logits, and the per-batch :class:`Distiller` the training loop calls."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pquant.distill.schema import DistillLoss


def kl_divergence(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``KL(softmax(teacher/T) || softmax(student/T))`` over the class dimension (dim 1),
    summed over classes and averaged over every other position (batch, and e.g. length).

    Args:
        student: logits ``(N, C)`` or ``(N, C, ...)``.
        teacher: logits of the same shape.
        temperature: ``T > 0``.
    """
    log_s = F.log_softmax(student / temperature, dim=1)
    log_t = F.log_softmax(teacher / temperature, dim=1)
    return (log_t.exp() * (log_t - log_s)).sum(dim=1).mean()


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, task: torch.Tensor | None,
                      kind: DistillLoss | str, temperature: float, alpha: float) -> torch.Tensor:
    """The distillation objective.

    Args:
        student: student logits ``(N, C, ...)``.
        teacher: teacher logits, same shape (no gradient needed).
        task: the task loss of the student on the labels (used by ``kl_ce`` only).
        kind: ``kl_ce`` -> ``alpha * T^2 * KL + (1 - alpha) * task``; ``kl`` -> ``T^2 * KL``;
            ``mse`` -> mean squared error between the logits.
        temperature: softening temperature ``T`` of the KL terms.
        alpha: weight of the distillation term in ``kl_ce``.
    """
    kind = DistillLoss(kind)
    if student.shape != teacher.shape:
        raise ValueError(f"student and teacher outputs differ in shape: {tuple(student.shape)} "
                         f"vs {tuple(teacher.shape)}")
    if kind is DistillLoss.mse:
        return F.mse_loss(student, teacher)
    kl = kl_divergence(student, teacher, temperature) * (temperature ** 2)
    if kind is DistillLoss.kl:
        return kl
    if task is None:
        raise ValueError("kl_ce needs the task loss")
    return alpha * kl + (1.0 - alpha) * task


class Distiller:
    """``distiller(x, student_out, y)`` -> the training loss of one batch.

    The teacher is frozen (no gradients) and kept in eval mode; its outputs are computed once per
    batch, under ``torch.no_grad``.

    Args:
        teacher: any module mapping the batch inputs to logits shaped like the student's.
        task_loss: the task loss (``training.loss``), for ``kl_ce``.
        kind, temperature, alpha: see :func:`distillation_loss`.
    """

    def __init__(self, teacher: nn.Module, task_loss: nn.Module, kind: DistillLoss | str = "kl_ce",
                 temperature: float = 4.0, alpha: float = 0.9) -> None:
        self.teacher = teacher.eval().requires_grad_(False)
        self.task_loss = task_loss
        self.kind = DistillLoss(kind)
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.teacher_calls = 0

    def teacher_outputs(self, x: torch.Tensor) -> torch.Tensor:
        if self.teacher.training:  # something switched it back: a teacher never trains
            self.teacher.eval()
        self.teacher_calls += 1
        with torch.no_grad():
            return self.teacher(x)

    def __call__(self, x: torch.Tensor, student: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        teacher = self.teacher_outputs(x)
        task = self.task_loss(student, y) if self.kind is DistillLoss.kl_ce else None
        return distillation_loss(student, teacher, task, self.kind, self.temperature, self.alpha)
