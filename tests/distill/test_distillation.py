"""Knowledge distillation: loss composition, a frozen teacher, every stage, config errors."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from pquant import add_compression_layers, train_model
from pquant.data.synthetic import SyntheticData
from pquant.distill.loss import Distiller, distillation_loss
from pquant.distill.schema import DistillationConfig
from pquant.errors import ConfigError
from pquant.pruning.base import Stage

QUANT = {"default_data_keep_negatives": 1, "default_data_integer_bits": 3,
         "default_data_fractional_bits": 4, "default_weight_keep_negatives": 1,
         "default_weight_fractional_bits": 7}


def test_loss_composition_on_a_tiny_model(tiny_mlp):
    torch.manual_seed(1)
    student, teacher = tiny_mlp(), tiny_mlp()
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(torch.randn_like(p))
    x, y = torch.randn(10, 8), torch.randint(0, 3, (10,))
    s, t = student(x), teacher(x)  # (N, C) logits
    T, alpha = 3.0, 0.7
    kl = F.kl_div(F.log_softmax(s / T, dim=1), F.softmax(t / T, dim=1), reduction="batchmean")
    ce = F.cross_entropy(s, y)
    d = Distiller(teacher, torch.nn.CrossEntropyLoss(), "kl_ce", T, alpha)
    assert torch.allclose(d(x, s, y), alpha * T * T * kl + (1 - alpha) * ce, atol=1e-6)
    assert torch.allclose(distillation_loss(s, t, None, "kl", T, alpha), T * T * kl, atol=1e-6)
    assert torch.equal(distillation_loss(s, t, None, "mse", T, alpha), F.mse_loss(s, t))
    assert float(distillation_loss(t, t, None, "kl", T, alpha).detach()) == pytest.approx(0, abs=1e-6)
    # alpha = 0 is the task loss alone; the gradient reaches the student, not the teacher
    assert torch.allclose(distillation_loss(s, t, ce, "kl_ce", T, 0.0), ce)
    d(x, s, y).backward()
    assert student.fc1.weight.grad is not None
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert not teacher.training


class _Zero:
    """A distiller whose loss is 0 (with a graph): train/loss is then the compression terms."""

    def __init__(self, teacher):
        self.inner = Distiller(teacher, torch.nn.CrossEntropyLoss(), "kl_ce", 2.0, 0.5)

    def __call__(self, x, out, y):
        return self.inner(x, out, y) * 0.0


def test_every_stage_with_compression_losses_and_a_frozen_teacher(tiny_mlp):
    data = SyntheticData(n_samples=160, n_features=8, n_classes=3)
    cfg = {"training": {"progress": False, "pretraining_epochs": 1, "epochs": 2,
                        "fine_tuning_epochs": 1},
           "pruning": {"pruning_method": "dst", "alpha": 1e-3}, "quantization": QUANT}
    teacher = tiny_mlp()
    frozen = copy.deepcopy(teacher.state_dict())
    student = add_compression_layers(tiny_mlp(), cfg)
    loader = data.train_loader(32, seed=0)
    zero = _Zero(teacher)
    result = train_model(student, cfg, loader, data.val_loader(64), distiller=zero)
    assert zero.inner.teacher_calls == 4 * len(loader)  # once per batch, every stage
    assert all(torch.equal(frozen[k], v) for k, v in teacher.state_dict().items())
    assert not teacher.training
    by_stage = {Stage(int(h["stage"])): h["train/loss"] for h in result.history}
    assert by_stage[Stage.PRETRAINING] == 0.0  # no compression loss before training
    assert by_stage[Stage.TRAINING] > 0.0  # DST's threshold regulariser is still added
    assert by_stage[Stage.FINETUNING] == 0.0


def test_distillation_through_train_model_changes_the_result(tiny_mlp):
    data = SyntheticData(n_samples=160, n_features=8, n_classes=3)
    cfg = {"training": {"progress": False, "pretraining_epochs": 1, "epochs": 2,
                        "fine_tuning_epochs": 1},
           "pruning": {"pruning_method": "pdp", "epsilon": 0.5}, "quantization": QUANT}
    runs = []
    for distiller in (None, Distiller(tiny_mlp(n_out=3, hidden=(4,)), torch.nn.CrossEntropyLoss(),
                                      "kl_ce", 4.0, 0.9)):
        torch.manual_seed(0)
        model = add_compression_layers(tiny_mlp(), cfg)
        runs.append(train_model(model, cfg, data.train_loader(32, seed=0), None,
                                distiller=distiller).history[-1]["train/loss"])
    assert runs[0] != runs[1]


@pytest.mark.parametrize(("fields", "message"), [
    ({"enabled": True}, "give exactly one teacher"),
    ({"enabled": True, "teacher": "x", "teacher_model": {"_target_": "a.b"}},
     "give exactly one teacher"),
    ({"enabled": True, "teacher": "x", "temperature": 0.0}, "distillation.temperature"),
    ({"enabled": True, "teacher": "x", "alpha": 1.5}, "distillation.alpha"),
    ({"enabled": True, "teacher": "x", "teacher_checkpoint": "c.pt"}, "teacher_checkpoint"),
    ({"teacher": "x"}, "distillation=kd"),
])
def test_bad_settings_are_clear(fields, message):
    with pytest.raises(ConfigError, match=message):
        DistillationConfig(**fields).validate()


def test_teacher_from_a_previous_run_dir(tmp_path, compose):
    from pquant.distill.teacher import build_teacher, teacher_from_run_dir
    from pquant.runner import run

    overrides = ["data=synthetic", "training.epochs=1", "training.pretraining_epochs=0",
                 "pruning=none", "quantization=none", "tracking=none", "training.progress=false"]
    run(compose(overrides), output_dir=str(tmp_path / "teacher"))
    teacher = teacher_from_run_dir(tmp_path / "teacher", 16, 4)
    saved = torch.load(tmp_path / "teacher" / "model.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in teacher.state_dict().items())
    with pytest.raises(ConfigError, match="32-hex-digit MLflow run id"):
        build_teacher(DistillationConfig(enabled=True, teacher="nowhere"), 16, 4, None)
    student = compose(overrides + ["distillation=kd", f"distillation.teacher={tmp_path / 'teacher'}",
                                   "pruning=pdp", "quantization=fixed", "pruning.epsilon=1.0"])
    report = run(student, output_dir=str(tmp_path / "student"))
    assert report["sparsity/global"] > 0.5


def test_teacher_from_an_mlflow_run_id(tmp_path, compose):
    from mlflow.tracking import MlflowClient

    from pquant.distill.teacher import build_teacher
    from pquant.runner import run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run(compose(["data=synthetic", "training.epochs=1", "training.pretraining_epochs=0",
                 "pruning=none", "quantization=none", f"tracking.uri={uri}",
                 "training.progress=false"]), output_dir=str(tmp_path / "teacher"))
    client = MlflowClient(tracking_uri=uri)
    (teacher_run,) = client.search_runs([client.get_experiment_by_name("pquant").experiment_id])
    teacher = build_teacher(DistillationConfig(enabled=True, teacher=teacher_run.info.run_id),
                            16, 4, uri)
    saved = torch.load(tmp_path / "teacher" / "model.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in teacher.state_dict().items())
    assert not teacher.training
    with pytest.raises(ConfigError, match="no MLflow run"):
        build_teacher(DistillationConfig(enabled=True, teacher="0" * 32), 16, 4, uri)
