"""The learning task -- ``classification`` or ``regression`` -- and its default loss.

The task is ``training.task`` when set; else what the loss says (``MSELoss``, ``L1Loss``,
``HuberLoss``, ``SmoothL1Loss`` -> regression; ``CrossEntropyLoss``, ``NLLLoss`` ->
classification); else the data section's ``task`` (``data=synthetic_regression``,
``data=files data.task=regression``); else the data module decides (``data=files`` infers it
from the label type), classification by default. ``training.loss: null`` means the task's loss:
cross-entropy for classification, mean squared error for regression.
"""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from torch import nn

from pquant.errors import ConfigError

TASKS = ("classification", "regression")
_REGRESSION = (nn.MSELoss, nn.L1Loss, nn.HuberLoss, nn.SmoothL1Loss)
_CLASSIFICATION = (nn.CrossEntropyLoss, nn.NLLLoss)
DEFAULT_LOSS = {"classification": "torch.nn.CrossEntropyLoss", "regression": "torch.nn.MSELoss"}


def loss_task(loss: Any) -> str | None:
    """The task a loss node (``{_target_: ...}``) implies, or ``None`` if it says nothing."""
    if not loss or not hasattr(loss, "get") or not loss.get("_target_"):
        return None
    try:
        cls = get_class(str(loss.get("_target_")))
    except Exception:  # noqa: BLE001 - an unknown target is reported when it is built
        return None
    if not isinstance(cls, type):
        return None
    if issubclass(cls, _REGRESSION):
        return "regression"
    if issubclass(cls, _CLASSIFICATION):
        return "classification"
    return None


def training_task(training: Any) -> str:
    """The task from the training section alone (library use): ``task``, else the loss's,
    else classification."""
    task = str(training.get("task", "auto") if hasattr(training, "get")
               else getattr(training, "task", "auto"))
    loss = training.get("loss") if hasattr(training, "get") else getattr(training, "loss", None)
    if task != "auto":
        return task
    return loss_task(loss) or "classification"


def configured_task(cfg: Any) -> str | None:
    """The task the composed config asks for, or ``None`` (the data module decides).

    Raises:
        ConfigError: ``training.task``, the loss and ``data.task`` disagree.
    """
    training = cfg.get("training") or {}
    data = cfg.get("data") or {}
    claims = []
    task = str(training.get("task", "auto"))
    if task != "auto":
        claims.append((f"training.task={task}", task))
    implied = loss_task(training.get("loss"))
    if implied is not None:
        claims.append((f"training.loss._target_={training.get('loss').get('_target_')}",
                       implied))
    data_task = str(data.get("task", "auto")) if hasattr(data, "get") else "auto"
    if data_task in TASKS:
        claims.append((f"data.task={data_task}", data_task))
    if len({t for _, t in claims}) > 1:
        said = ", ".join(f"{who} ({t})" for who, t in claims)
        raise ConfigError(f"the task is ambiguous: {said}; make them agree (training.task is "
                          f"one of auto, {', '.join(TASKS)}; regression losses: MSELoss, "
                          f"L1Loss, HuberLoss, SmoothL1Loss)")
    return claims[0][1] if claims else None


def data_overrides(data_node: Any, task: str | None) -> dict[str, str]:
    """Keyword arguments that hand a known task to a data module whose ``task`` is ``auto``."""
    if task is None or not hasattr(data_node, "get") or data_node.get("task") != "auto":
        return {}
    return {"task": task}


def reconcile(data: Any, task: str | None) -> str:
    """The run's task: the built data module's (``data.task``), checked against the config's.

    Raises:
        ConfigError: the data's targets do not fit the configured task.
    """
    actual = str(getattr(data, "task", None) or task or "classification")
    if task is not None and actual != task:
        raise ConfigError(f"the config asks for {task} (training.task / training.loss) but the "
                          f"data module serves {actual} targets; set data.task={task} (files: "
                          f"class labels for classification, numbers for regression) or "
                          f"training.task={actual}")
    return actual


def build_loss(training: Any, task: str) -> nn.Module:
    """``training.loss`` instantiated, or the task's default loss when it is null."""
    loss = training.get("loss") if hasattr(training, "get") else getattr(training, "loss", None)
    node = loss if loss else {"_target_": DEFAULT_LOSS[task]}
    implied = loss_task(node)
    if implied is not None and implied != task:
        raise ConfigError(f"training.loss._target_={node.get('_target_')} is a {implied} loss "
                          f"but the task is {task}; set training.loss=null (the task's default) "
                          f"or a {task} loss")
    try:
        return instantiate(node)
    except InstantiationException as exc:
        raise ConfigError(f"training.loss: could not build {node.get('_target_')!r}: "
                          f"{exc.__cause__ or exc}") from None


def default_objective(cfg: Any) -> str:
    """The sweeper's default objective: ``val/accuracy:maximize``, or ``val/mse:minimize`` when
    the config asks for regression."""
    if configured_task(cfg) == "regression":
        return "val/mse:minimize"
    return "val/accuracy:maximize"
