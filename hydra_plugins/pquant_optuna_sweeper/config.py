"""Config of the ``pquant_optuna`` sweeper and its samplers (stored in Hydra's ConfigStore).

The names are pquant's own (``hydra/sweeper=pquant_optuna``, samplers in the group
``hydra/sweeper/pquant_sampler``) so that installing pquant leaves ``hydra/sweeper=optuna`` and
``hydra/sweeper/sampler`` to the official ``hydra-optuna-sweeper`` plugin.

This module is imported by Hydra's plugin scan at every start: it must stay light (no optuna
import) and must not use ``from __future__ import annotations`` (Hydra reads the dataclasses).
"""

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class SamplerConf:
    _target_: str = "optuna.samplers.TPESampler"
    _partial_: bool = True
    seed: Optional[int] = None


@dataclass
class OptunaSweeperConf:
    """``hydra/sweeper=pquant_optuna``.

    Attributes:
        sampler: an Optuna sampler (group ``hydra/sweeper/pquant_sampler``: tpe, random, grid,
            nsgaii, cmaes), or any ``_target_``.
        objectives: ``"<metric of the run's report>:<maximize|minimize>"`` entries; two or more
            make a multi-objective study (Pareto front). On the command line:
            ``hydra.sweeper.objectives=[val/accuracy:maximize,ebops/total:minimize]``.
            Default: the task's headline metric (``val/accuracy:maximize``, or
            ``val/mse:minimize`` for regression).
        study_name: default ``finetuning.experiment_name`` when set, else a name derived from
            the objectives and the search space (the same command continues the same study).
        storage: an RDB URL (``sqlite:///...``, ``postgresql://...``) or a journal file path;
            default ``<start dir>/outputs/optuna/<study>.journal``.
        n_trials: trials this invocation runs (default ``finetuning.num_trials``, else 20).
        max_trials: optional cap on the study's total trials (all workers and reruns together;
            exact; failed trials do not count).
        n_jobs: trials launched together per batch (run in parallel by a parallel launcher).
        max_failure_rate: fraction of ``n_trials`` allowed to fail (at least one) before the
            sweep stops.
        params: search space as overrides, e.g. ``{pruning.sparsity: interval(0.5, 0.95)}``.
        heartbeat_interval: seconds between a worker's heartbeats: Optuna heartbeats for its
            running trials (RDB storages) and its ``last seen`` time on the study's MLflow
            parent run.
        grace_period: seconds without a heartbeat after which any other worker, on any host,
            fails that worker's trials, marks their MLflow runs KILLED and ends the parent run
            without it (a lost node). Default: 4 heartbeat intervals.
    """

    _target_: str = "hydra_plugins.pquant_optuna_sweeper.sweeper.PQuantOptunaSweeper"
    defaults: list[Any] = field(default_factory=lambda: ["_self_", {"pquant_sampler": "tpe"}])
    sampler: Any = None
    objectives: Optional[list[str]] = None  # null: the task's headline metric
    study_name: Optional[str] = None
    storage: Optional[str] = None
    n_trials: Optional[int] = None
    max_trials: Optional[int] = None
    n_jobs: int = 1
    max_failure_rate: float = 0.25
    params: dict[str, str] = field(default_factory=dict)
    heartbeat_interval: int = 30
    grace_period: Optional[int] = None


_SAMPLERS = {
    "tpe": "optuna.samplers.TPESampler",
    "random": "optuna.samplers.RandomSampler",
    "grid": "optuna.samplers.GridSampler",
    "nsgaii": "optuna.samplers.NSGAIISampler",
    "cmaes": "optuna.samplers.CmaEsSampler",
}

_cs = ConfigStore.instance()
_cs.store(group="hydra/sweeper", name="pquant_optuna", node=OptunaSweeperConf,
          provider="pquant")
for _name, _target in _SAMPLERS.items():
    _cs.store(group="hydra/sweeper/pquant_sampler", name=_name,
              node=SamplerConf(_target_=_target), package="hydra.sweeper.sampler",
              provider="pquant")
