"""Knowledge distillation: a frozen teacher's logits guide the compressed student.

``distillation=kd`` in the config (see :class:`pquant.distill.schema.DistillationConfig`); the
loss is in :mod:`pquant.distill.loss`, the teacher is rebuilt by :mod:`pquant.distill.teacher`.
"""
