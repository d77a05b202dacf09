"""compose -> validate -> instantiate -> compress -> train stages -> evaluate -> report -> track."""

from __future__ import annotations

import json
import logging
import random
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from pquant import distributed, kernels
from pquant.config.sections import sections
from pquant.errors import ConfigError
from pquant.export.config import export_settings
from pquant.fitcompress.ladders import weight_compression
from pquant.metrics.accuracy import evaluate
from pquant.metrics.report import compression_report
from pquant.metrics.summary import format_summary
from pquant.nn.finalize import finalize
from pquant.nn.registry import summary_row
from pquant.nn.replace import add_compression_layers
from pquant.tracking.base import NullTracker
from pquant.tracking.hydra_callback import read_parent_run
from pquant.training import interrupt
from pquant.training.checkpoint import CHECKPOINT_NAME, Checkpointer, open_resume
from pquant.training.loop import train_model
from pquant.training.task import build_loss, configured_task, data_overrides, reconcile

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- helpers
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; explicit names are checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available here; use device=auto or "
                          f"device=cpu")
    return device


def _build(section: str, node, **kwargs):
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        raise ConfigError(f"{section}: could not build {node.get('_target_')!r}: "
                          f"{cause or exc}") from None


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}`` (lists stay whole)."""
    if isinstance(tree, dict):
        out: dict[str, str] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: "null" if tree is None else str(tree)}


class _HydraRun:
    """What the runner needs from Hydra's runtime (absent in library use)."""

    def __init__(self, output_dir: str | None) -> None:
        self.choices: dict[str, str] = {}
        self.sweep_dir: str | None = None
        self.job_num: int | None = None
        try:
            from hydra.core.hydra_config import HydraConfig
            from hydra.types import RunMode

            hc = HydraConfig.get()
        except ValueError:
            hc = None
        if hc is not None:
            self.choices = {k: str(v) for k, v in hc.runtime.choices.items()
                            if not k.startswith("hydra/") and not k.startswith("schema/")}
            output_dir = output_dir or hc.runtime.output_dir
            if hc.mode == RunMode.MULTIRUN:
                self.sweep_dir = hc.sweep.dir
                self.job_num = hc.job.num
        if output_dir is None:
            stamp = datetime.now().strftime("%Y-%m-%d/%H-%M-%S-%f")
            output_dir = str(Path("outputs") / "runs" / stamp)
        self.output_dir = Path(output_dir)


def _distillation(cfg):
    """The validated ``distillation`` section (defaults when the config has none)."""
    from pquant.distill.schema import DistillationConfig

    node = OmegaConf.select(cfg, "distillation") if isinstance(cfg, DictConfig) else None
    try:
        merged = OmegaConf.merge(OmegaConf.structured(DistillationConfig), node or {})
        distill = OmegaConf.to_object(merged)
    except Exception as exc:  # noqa: BLE001 - a type error in the section is one message
        raise ConfigError(f"distillation: {exc}") from None
    distill.validate("distillation")
    return distill


# ----------------------------------------------------------------------------- run
def _load_kernels(device: torch.device | None = None) -> str:
    """The run's kernel path, ``fused`` or ``torch``, decided now (not mid-run): nothing is built
    for a CUDA or float64 run, an ``auto`` run never waits for a build (see
    :func:`pquant.kernels.prepare`). A bad PQUANT_KERNELS is a clean error; ``device=None`` only
    checks it."""
    try:
        if device is None:
            kernels.setting()
            return "torch"
        return kernels.prepare(device, torch.get_default_dtype())
    except ValueError as exc:
        raise ConfigError(f"environment variable {exc}") from None
    except RuntimeError as exc:  # PQUANT_KERNELS=on and the build failed
        raise ConfigError(str(exc)) from None


def _check_distributed(s, world: distributed.World) -> None:
    """Settings a torchrun run cannot honour, refused before anything is built."""
    if s.fitcompress.enable_fitcompress:
        raise ConfigError(f"fitcompress.enable_fitcompress=true is not supported under torchrun "
                          f"(WORLD_SIZE={world.size}): its search reads the data on one "
                          f"process; run it with python -m pquant")
    hc = _HydraRun(None)
    if hc.sweep_dir is not None:
        raise ConfigError(f"a multirun (-m, sweeps, finetuning searches) is not supported under "
                          f"torchrun (WORLD_SIZE={world.size}): torchrun trains one model; "
                          f"start the sweep with python -m pquant -m")
    message = distributed.check_batches(0, s.training.batch_size, world)
    if message:
        raise ConfigError(message)


def _shard(loader, data, loss_fn, s, world: distributed.World, model):
    """This rank's share of the global batches (after the checks that need the data), rank 0's
    initial state copied to every rank."""
    splits = getattr(data, "splits", None)
    samples = len(splits["train"][0]) if splits else len(getattr(loader, "x", ()))
    message = distributed.check_batches(samples, s.training.batch_size, world)
    if message:
        raise ConfigError(message)
    reduction = getattr(loss_fn, "reduction", "mean")
    if reduction != "mean":
        raise ConfigError(f"training.loss: reduction must be 'mean' under torchrun (the "
                          f"gradients are averaged over the processes), got {reduction!r}")
    if distributed.has_batch_norm(model):
        log.warning("torchrun: batch-norm layers normalise each process's shard with its own "
                    "batch statistics (their running statistics are averaged); the result is "
                    "close to, not equal to, one process on the global batch")
    distributed.broadcast_state(model)
    return distributed.ShardedLoader(loader, world)


def _check_one_model(model) -> None:
    gap = distributed.divergence(model)
    if gap != 0.0:
        log.error("torchrun: the processes' models differ after training (largest difference "
                  "%.3g); the run directory holds rank 0's", gap)


def _build_training(s, model: torch.nn.Module, task: str) -> tuple[Any, Any, Any]:
    """Optimizer (on ``model``), scheduler and loss (the task's default when ``training.loss`` is
    null), built now so that a bad setting fails before any tracking run exists."""
    t = s.training

    def call(path: str, factory, *args):
        try:
            return factory(*args)
        except (ValueError, TypeError, KeyError) as exc:
            target = getattr(factory, "func", factory)
            name = getattr(target, "__qualname__", repr(target))
            raise ConfigError(f"{path}: {name} rejected the settings: {exc}") from None

    optimizer = call("training.optimizer", _build("training.optimizer", t.optimizer),
                     model.parameters())
    scheduler = None
    if t.scheduler is not None:
        scheduler = call("training.scheduler", _build("training.scheduler", t.scheduler),
                         optimizer)
    return optimizer, scheduler, build_loss(t, task)


def run(cfg: DictConfig, output_dir: str | None = None) -> dict[str, Any]:
    """Run one experiment described by the composed config ``cfg``.

    SIGINT/SIGTERM stop it at the next batch boundary (the run is marked KILLED and
    :class:`pquant.training.interrupt.Interrupted` is raised).

    Returns:
        The report (flat metrics plus ``warnings``), also written to ``<output_dir>/report.json``.
    """
    try:
        with interrupt.handle_signals():
            return _run(cfg, output_dir)
    finally:
        distributed.stop()  # (torchrun: leave the process group, on every path)


def _run(cfg: DictConfig, output_dir: str | None) -> dict[str, Any]:
    resume = None
    if OmegaConf.select(cfg, "training.resume"):  # the saved config of that run continues
        output_dir = str(cfg.training.resume)
        resume = open_resume(output_dir)
        cfg = OmegaConf.create(resume["config"])
        log.info("training.resume: continuing %s with the config it was started with",
                 output_dir)
    s = sections(cfg)  # every range check, before any model surgery
    distill = _distillation(cfg)
    world = distributed.env_world()  # (torchrun: several processes train one model)
    if world.distributed:
        _check_distributed(s, world)
    tracker = _build("tracking", cfg.tracking)
    tracking_uri = getattr(tracker, "tracking_uri", None)  # (a distillation teacher's store)
    if world.rank0:
        tracker.check()  # unreachable or unwritable store: fail now, within seconds
    else:  # only rank 0 tracks and writes
        tracker = NullTracker()
    export = export_settings(cfg)  # (and the export extra, before any training)
    _load_kernels()
    hydra_run = _HydraRun(output_dir)
    if resume is not None:
        hydra_run.choices = dict(resume["choices"])
    out = hydra_run.output_dir
    if world.rank0:
        out.mkdir(parents=True, exist_ok=True)
    seed_everything(int(cfg.seed))
    device = distributed.start(resolve_device(str(cfg.device)))  # torchrun: cuda:LOCAL_RANK
    kernel_path = _load_kernels(device)  # (models are built in the default dtype)

    task = configured_task(cfg)
    data = _build("data", cfg.data, **data_overrides(cfg.data, task))
    task = reconcile(data, task)
    model = _build("model", cfg.model, input_size=data.num_features,
                   output_size=getattr(data, "num_outputs", data.num_classes))
    model = add_compression_layers(model, cfg, inplace=True).to(device)
    optimizer, scheduler, loss_fn = _build_training(s, model, task)
    train_loader = data.train_loader(s.training.batch_size, int(cfg.seed))
    if world.distributed:
        train_loader = _shard(train_loader, data, loss_fn, s, world, model)
    distiller = None
    if distill.enabled:
        from pquant.distill.loss import Distiller
        from pquant.distill.teacher import build_teacher

        teacher = build_teacher(distill, data.num_features, data.num_classes,
                                tracking_uri)
        distiller = Distiller(teacher.to(device), loss_fn, distill.loss,
                              distill.temperature, distill.alpha)
    if resume is not None:
        tracker.resume_run_id = resume.get("mlflow_run_id")

    choices = hydra_run.choices or {"pruning": s.pruning.pruning_method}
    title = " / ".join(f"{k}={choices[k]}" for k in ("data", "model", "pruning", "quantization")
                       if k in choices)
    log.info("data: %s", data.describe())
    conversion = model.pquant_report
    log.info("converted: %s", ", ".join(conversion.converted) or "nothing")
    q = s.quantization
    if q.use_hgq and q.hgq_beta == 0 and q.hgq_gamma == 0:
        log.warning("quantization.use_hgq=true with hgq_beta=0 and hgq_gamma=0: the bit-widths "
                    "only follow the task loss, nothing pushes them down; set "
                    "quantization.hgq_beta (EBOPs) and/or quantization.hgq_gamma (widths)")
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    tags = {f"choice.{k}": v for k, v in choices.items()}
    tags.update(tracker.tags)
    tags["pquant.kind"] = "job" if hydra_run.sweep_dir else "run"
    tags["pquant.kernels"] = kernel_path
    if hydra_run.job_num is not None:
        tags["pquant.job_num"] = str(hydra_run.job_num)
    parent = read_parent_run(hydra_run.sweep_dir) if hydra_run.sweep_dir else None
    run_name = "-".join(choices.get(k, "") for k in ("pruning", "quantization", "model")
                        if choices.get(k))

    checkpointer = None
    if s.training.checkpoint_every and world.rank0:
        checkpointer = Checkpointer(out / CHECKPOINT_NAME, s.training.checkpoint_every,
                                    {"config": resolved, "choices": choices},
                                    before_save=tracker.flush)

    interrupt.check()  # a signal during set-up: stop before a run is created
    with tracker.track(run_name=run_name or "pquant", params=flatten(resolved), tags=tags,
                       parent_run_id=parent):
        if checkpointer is not None:
            checkpointer.extra["mlflow_run_id"] = getattr(tracker, "run_id", None)
        result = train_model(model, cfg, train_loader,
                             data.val_loader(s.training.eval_batch_size), device=device,
                             optimizer=optimizer, scheduler=scheduler, loss_fn=loss_fn,
                             on_epoch_end=tracker.log_metrics, distiller=distiller,
                             checkpointer=checkpointer, resume=resume,
                             progress=None if world.rank0 else False)
        if world.distributed:
            _check_one_model(model)
        val = evaluate(model, data.val_loader(s.training.eval_batch_size), loss_fn, device)
        test = evaluate(model, data.test_loader(s.training.eval_batch_size), loss_fn, device)
        metrics = compression_report(model, data.example_input(1).to(device))
        metrics.update({f"val/{k}": v for k, v in val.items()})
        metrics.update({f"test/{k}": v for k, v in test.items()})
        targets = [m.pruning.target_sparsity() for m in model.modules()
                   if getattr(m, "pruning", None) is not None]
        if targets and all(t is not None for t in targets) and len(set(targets)) == 1:
            metrics["target/sparsity"] = targets[0]
        metrics["compression/weights"] = weight_compression(model)  # weights' size / float32
        fit = result.fitcompress
        if fit is not None:  # FITCompress: the search trace, and its choice as reusable config
            metrics.update(fit.metrics())
            (out / "fitcompress.yaml").write_text(fit.overrides_yaml())
            tracker.log_artifact(out / "fitcompress.yaml")
        tracker.log_metrics(metrics, step=len(result.history))
        report = dict(metrics)
        report["warnings"] = result.warnings
        report["task"] = task
        if getattr(data, "classes", None) is not None:
            report["classes"] = list(data.classes)  # class code i <- original label classes[i]
        report["conversion"] = conversion.as_dict()
        report["kernels"] = kernel_path
        if not world.rank0:  # (every rank evaluated the same model: rank 0 writes it)
            return report
        (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True))
        (out / "config.yaml").write_text(OmegaConf.to_yaml(resolved))
        torch.save(model.state_dict(), out / "model.pt")
        finalize(model)  # frozen quantizers, baked weights: the deployable model
        torch.save(model.state_dict(), out / "model_final.pt")
        export_line = None
        if export.formats:
            from pquant.export.check import export_run

            export_line = export_run(model, data, export, out, tracker, report,
                                     step=len(result.history))
        tracker.log_artifact(out / "report.json")
        tracker.log_artifact(out / "config.yaml")
        if tracker.log_model:
            tracker.log_artifact(out / "model.pt")
            tracker.log_artifact(out / "model_final.pt")

    layers = [n for n, m in model.named_modules() if summary_row(m)]
    footer = [f"report      {out / 'report.json'}"]
    where = tracker.describe()
    if where:
        footer.append(f"tracking    {where}")
        if hasattr(tracker, "ui_command"):
            footer.append(f"browse      {tracker.ui_command()}")
    if conversion.unsupported:
        footer.append(f"unconverted {conversion.unsupported} (floating point)")
    if result.fitcompress is not None:
        footer += result.fitcompress.summary_lines()
    if export_line:
        footer.append(f"export      {export_line}")
    footer += [f"WARNING     {w}" for w in result.warnings]
    print(format_summary(metrics, title, layers, footer), flush=True)
    return report
