"""``load_run``: rebuild a trained model from a run directory or an MLflow run id."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from pquant.errors import ConfigError


def _run_files(run: str | Path, tracking_uri: str | None) -> Path:
    """The directory holding ``config.yaml`` and the state dicts (downloaded for a run id)."""
    path = Path(run)
    if path.is_dir():
        return path
    if path.suffix or "/" in str(run):
        raise ConfigError(f"load_run: {str(run)!r} is neither a run directory nor an MLflow run id")
    from pquant.tracking.mlflow_tracker import default_uri
    from pquant.tracking.store import open_client

    client = open_client(tracking_uri or default_uri())
    target = Path(tempfile.mkdtemp(prefix="pquant-run-"))
    try:
        for name in ("config.yaml", "model.pt", "model_final.pt", "report.json"):
            try:
                client.download_artifacts(str(run), name, str(target))
            except Exception:  # noqa: BLE001 - a missing state dict is reported below
                if name == "config.yaml":
                    raise
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"load_run: cannot read MLflow run {run!r} at "
                          f"{tracking_uri or default_uri()}: {exc}") from None
    return target


def build_run_model(cfg: DictConfig, num_features: int, num_classes: int) -> nn.Module:
    """The run's model with its PQ layers (untrained weights)."""
    from pquant.nn.replace import add_compression_layers

    model = instantiate(cfg.model, input_size=num_features, output_size=num_classes)
    return add_compression_layers(model, cfg, inplace=True)


def load_run(run: str | Path, final: bool = True, tracking_uri: str | None = None,
             map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a run's model from its ``config.yaml`` and load its weights.

    Args:
        run: a run directory (``outputs/runs/...``) or an MLflow run id.
        final: load ``model_final.pt`` (finalised: baked weights, frozen formats -- what is
            exported) instead of ``model.pt`` (trained, before finalisation).
        tracking_uri: MLflow tracking URI for a run id (default: as ``python -m pquant``).
        map_location: device for the weights.

    Returns:
        The model in eval mode; ``model.pquant_config`` holds the run's config and
        ``model.pquant_run_dir`` the folder its files were read from.
    """
    from pquant.nn.chain import elide_redundant_quantizers
    from pquant.nn.finalize import finalize

    files = _run_files(run, tracking_uri)
    cfg_path = files / "config.yaml"
    state_path = files / ("model_final.pt" if final else "model.pt")
    for p in (cfg_path, state_path):
        if not p.is_file():
            raise ConfigError(f"load_run: {p} does not exist (is {run!r} a finished pquant run?)")
    cfg = OmegaConf.load(cfg_path)
    data = instantiate(cfg.data)
    model = build_run_model(cfg, data.num_features, data.num_classes)
    if final:
        model.eval()
        with torch.no_grad():
            model(data.example_input(1))  # shapes for the frozen formats
        finalize(model)
    state = torch.load(state_path, map_location=map_location, weights_only=True)
    model.load_state_dict(state)
    elide_redundant_quantizers(model)
    model.pquant_config = cfg
    model.pquant_run_dir = files  # (a download folder for an MLflow run id)
    return model.eval()
