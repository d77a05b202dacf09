"""Rebuild a distillation teacher: a previous run (directory or MLflow id) or any module."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from pquant.distill.schema import DistillationConfig
from pquant.errors import ConfigError

_RUN_ID = re.compile(r"[0-9a-f]{32}")


def _instantiate(path: str, node, **kwargs):
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        raise ConfigError(f"{path}: could not build {node.get('_target_')!r}: "
                          f"{cause or exc}") from None


def _state_dict(path: Path, where: str) -> dict:
    if not path.is_file():
        raise ConfigError(f"{where}: no such file {str(path)!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one message
        raise ConfigError(f"{where}: cannot read {str(path)!r} as a state dict: {exc}") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # a pquant checkpoint.pt
    return state


def teacher_from_run_dir(run_dir: str | Path, num_features: int, num_classes: int,
                         where: str = "distillation.teacher") -> nn.Module:
    """The compressed model of a finished run, rebuilt from its ``config.yaml`` and ``model.pt``
    (the trained state before finalisation) exactly as that run built it."""
    from pquant.nn.replace import add_compression_layers

    run_dir = Path(run_dir)
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise ConfigError(f"{where}={str(run_dir)!r}: no config.yaml there (a finished pquant "
                          f"run directory holds config.yaml and model.pt)")
    cfg = OmegaConf.load(config)
    model = _instantiate(f"{where} (model of that run)", cfg.model, input_size=num_features,
                         output_size=num_classes)
    model = add_compression_layers(model, cfg, inplace=True)
    try:
        model.load_state_dict(_state_dict(run_dir / "model.pt", where))
    except RuntimeError as exc:
        raise ConfigError(f"{where}: model.pt does not fit the model in config.yaml: "
                          f"{str(exc).splitlines()[0]}") from None
    return model


def build_teacher(cfg: DistillationConfig, num_features: int, num_classes: int,
                  tracking_uri: str | None) -> nn.Module:
    """The teacher named by ``cfg`` (validated), on the CPU, frozen and in eval mode."""
    if cfg.teacher_model is not None:
        model = _instantiate("distillation.teacher_model", cfg.teacher_model)
        if not isinstance(model, nn.Module):
            raise ConfigError(f"distillation.teacher_model must build a torch.nn.Module, got "
                              f"{type(model).__name__}")
        if cfg.teacher_checkpoint is not None:
            state = _state_dict(Path(cfg.teacher_checkpoint), "distillation.teacher_checkpoint")
            try:
                model.load_state_dict(state)
            except RuntimeError as exc:
                raise ConfigError(f"distillation.teacher_checkpoint does not fit "
                                  f"distillation.teacher_model: {str(exc).splitlines()[0]}"
                                  ) from None
    else:
        teacher = str(cfg.teacher)
        if Path(teacher).is_dir():
            model = teacher_from_run_dir(teacher, num_features, num_classes)
        elif _RUN_ID.fullmatch(teacher):
            if tracking_uri is None:
                raise ConfigError(f"distillation.teacher={teacher!r} is an MLflow run id, but "
                                  f"tracking=none: name the run directory instead")
            from pquant.tracking.artifacts import download_run_files

            with tempfile.TemporaryDirectory(prefix="pquant-teacher-") as tmp:
                try:
                    download_run_files(tracking_uri, teacher, ["config.yaml", "model.pt"], tmp)
                except FileNotFoundError as exc:
                    raise ConfigError(f"distillation.teacher={teacher!r}: {exc}") from None
                model = teacher_from_run_dir(tmp, num_features, num_classes)
        else:
            raise ConfigError(f"distillation.teacher must be a run directory (with config.yaml "
                              f"and model.pt) or a 32-hex-digit MLflow run id, got {teacher!r}")
    return model.eval().requires_grad_(False)
