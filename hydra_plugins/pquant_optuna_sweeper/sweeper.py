"""The sweeper: asks Optuna for trials, launches them through Hydra, tells the results.

Imported by Hydra's plugin scan at every start: optuna is imported only when a sweep runs, and
there is no ``from __future__ import annotations`` here.
"""

import functools
import json
import logging
import warnings
from pathlib import Path
from typing import Any, Optional

from hydra.core.plugins import Plugins
from hydra.errors import CompactHydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

RESULTS_FILE = "optimization_results.yaml"


class StudyFailed(CompactHydraException):
    """Too many trials failed: the sweep stopped."""


def _parse_objectives(entries) -> dict[str, str]:
    """``["val/accuracy:maximize", ...]`` (or a mapping) -> ``{metric: direction}``."""
    if hasattr(entries, "items"):
        pairs = [(str(k), str(v)) for k, v in entries.items()]
    else:
        pairs = []
        for entry in entries:
            metric, sep, direction = str(entry).rpartition(":")
            if not sep:
                metric, direction = direction, "maximize"
            pairs.append((metric, direction))
    for metric, direction in pairs:
        if direction not in ("maximize", "minimize") or not metric:
            raise CompactHydraException(
                f"hydra.sweeper.objectives entries must be '<metric>:maximize' or "
                f"'<metric>:minimize', got {metric}:{direction}")
    return dict(pairs)


def _heartbeat(interval, grace) -> tuple[int, int]:
    """``hydra.sweeper.heartbeat_interval`` and ``grace_period`` (default 4 intervals), checked."""
    try:
        interval = int(interval)
        grace = 4 * interval if grace is None else int(grace)
    except (TypeError, ValueError):
        interval = grace = 0
    if interval < 1 or grace <= interval:
        raise CompactHydraException(
            "hydra.sweeper.heartbeat_interval must be a whole number of seconds >= 1 and "
            "hydra.sweeper.grace_period a larger one (default 4 intervals), got "
            f"heartbeat_interval={interval} grace_period={grace}")
    return interval, grace


class PQuantOptunaSweeper(Sweeper):
    def __init__(self, sampler: Any = None, objectives: Optional[list[str]] = None,
                 study_name: Optional[str] = None, storage: Optional[str] = None,
                 n_trials: Optional[int] = None, max_trials: Optional[int] = None,
                 n_jobs: int = 1, max_failure_rate: float = 0.25,
                 params: Optional[dict[str, str]] = None, heartbeat_interval: int = 30,
                 grace_period: Optional[int] = None) -> None:
        self.sampler = sampler
        self.objectives = _parse_objectives(objectives) if objectives else None
        self.study_name = study_name
        self.storage = storage
        self.n_trials = n_trials
        self.max_trials = max_trials
        self.n_jobs = max(1, int(n_jobs))
        self.max_failure_rate = float(max_failure_rate)
        self.params = dict(params or {})
        self.heartbeat_interval, self.grace_period = _heartbeat(heartbeat_interval, grace_period)
        self._in_flight: list = []
        self._storage = None
        self.config: Optional[DictConfig] = None
        self.launcher = None
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config = config
        if self.objectives is None:  # the task's headline metric
            from pquant.training.task import default_objective

            self.objectives = _parse_objectives([default_objective(config)])
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    # ------------------------------------------------------------------ pieces
    def _directions(self) -> list[str]:
        return list(self.objectives.values())

    def _sampler(self, space):
        """The sampler: ``hydra/sweeper/pquant_sampler`` (tpe by default), or the reference
        block's ``finetuning.sampler.type``/``params`` when only that one was changed."""
        import optuna

        finetuning = self.config.get("finetuning") or {}
        spec = finetuning.get("sampler") or {}
        kind, params = spec.get("type", "TPESampler"), dict(spec.get("params") or {})
        if not hasattr(optuna.samplers, kind):
            raise CompactHydraException(
                f"finetuning.sampler.type must name a sampler of optuna.samplers, got {kind!r}")
        sampler = self.sampler
        func = getattr(sampler, "func", None)
        hydra_default = sampler is None or (
            func is optuna.samplers.TPESampler and not any(sampler.keywords.values()))
        reference_default = kind == "TPESampler" and not params
        if hydra_default and not reference_default:
            sampler = functools.partial(getattr(optuna.samplers, kind), **params)
        elif not hydra_default and not reference_default and func is not None \
                and func is not getattr(optuna.samplers, kind):
            raise CompactHydraException(
                f"two samplers were asked for: hydra/sweeper/pquant_sampler ({func.__name__}) "
                f"and finetuning.sampler.type ({kind}); set one of them")
        if sampler is None:
            sampler = functools.partial(optuna.samplers.TPESampler)
        if isinstance(sampler, functools.partial):
            if sampler.func is optuna.samplers.GridSampler:
                from pquant.hpo.grid import ask_tell_grid_sampler, grid_space

                return ask_tell_grid_sampler(search_space=grid_space(space),
                                             **sampler.keywords)
            return sampler()
        return sampler

    def _tracker(self):
        from hydra.utils import instantiate

        tracking = self.config.get("tracking")
        tracker = instantiate(tracking) if tracking is not None else None
        if tracker is None or not tracker.enabled:
            return None
        tracker.check()  # an unreachable or unwritable store: fail before any trial
        return tracker

    def _parent_run(self, tracker, study, storage, target: str, sweep_dir: Path) -> Optional[str]:
        """One MLflow parent run per study, shared by every worker and rerun; this process
        registers as one of its workers (the last worker to leave ends it)."""
        from pquant.hpo.study import PARENT_ATTR, parent_run_id
        from pquant.tracking.optuna_storage import shareable
        from pquant.tracking.stale import STORAGE_TAG, STUDY_TAG

        name = study.study_name

        def create() -> str:
            tags = {"pquant.kind": "sweep", STUDY_TAG: name,
                    "pquant.sweep_dir": str(sweep_dir.resolve())}
            if shareable(target):
                tags[STORAGE_TAG] = target
            return tracker.start_parent(run_name=f"study {name}", tags=tags, owned=False)

        run_id = parent_run_id(study, storage, create)
        try:
            tracker.join_parent(run_id, grace=self.grace_period)
        except Exception as exc:  # noqa: BLE001 - e.g. the study moved to another MLflow store
            log.warning("parent run %s of study %r is not in this MLflow store (%s); starting "
                        "a new one", run_id, name, exc)
            run_id = create()
            study.set_user_attr(PARENT_ATTR, run_id)
            tracker.join_parent(run_id, grace=self.grace_period)
        (sweep_dir / "tracking_parent.json").write_text(json.dumps({"run_id": run_id}))
        self._parent = (tracker, run_id)
        return run_id

    def _log_objectives(self, number: int, values: list[float]) -> None:
        """The study's trace on its parent run: ``objective/<metric>`` at step = trial."""
        parent = getattr(self, "_parent", None)
        if parent is not None:
            tracker, run_id = parent
            tracker.log_parent_metrics(run_id, {f"objective/{k}": v for k, v in
                                                zip(self.objectives, values)}, step=number)

    def _reap(self, study) -> None:
        """Fail trials of workers that are gone (another worker SIGKILLed, OOM) or lost (no
        heartbeat for ``grace_period``: a node lost) while this one runs, and mark their MLflow
        runs KILLED."""
        from pquant.tracking.trials import fail_lost_trials, fail_stale_trials

        gone = fail_stale_trials(study)
        lost = fail_lost_trials(study)
        parent = getattr(self, "_parent", None)
        if lost and parent is not None:
            from pquant.tracking.stale import kill_trial_runs

            try:
                kill_trial_runs(parent[0].client, parent[1], study.study_name, lost,
                                f"its sweep worker sent no heartbeat for {self.grace_period} s "
                                "(hydra.sweeper.grace_period): worker or node lost")
            except Exception as exc:  # noqa: BLE001 - best effort; the next reap retries
                log.warning("could not mark the MLflow runs of lost trials KILLED: %s", exc)
        if gone or lost:
            self._reap_runs()

    def _beat_trials(self, trials) -> None:
        """A first heartbeat for trials just asked (before the next periodic beat)."""
        from pquant.tracking.optuna_storage import beats

        if self._storage is not None and beats(self._storage):
            for trial in trials:
                self._storage.record_heartbeat(trial._trial_id)

    def _beat(self) -> None:
        """One heartbeat: the trials in flight (RDB storages) and this worker on the parent."""
        self._beat_trials(list(self._in_flight))
        parent = getattr(self, "_parent", None)
        if parent is not None:
            from pquant.tracking.stale import beat_parent

            beat_parent(parent[0].client, parent[1])

    def _reap_runs(self) -> None:
        parent = getattr(self, "_parent", None)
        if parent is None:
            return
        from pquant.tracking.stale import reap_stale_runs

        try:
            reap_stale_runs(parent[0].client)
        except Exception as exc:  # noqa: BLE001 - best effort; the next command retries
            log.warning("could not mark the MLflow runs of gone workers KILLED: %s", exc)

    def _leave_parent(self, status: str) -> None:
        parent = getattr(self, "_parent", None)
        if parent is not None:
            self._reap_runs()  # no run of a gone worker is left RUNNING when the study ends
            self._parent = None
            final = parent[0].leave_parent(parent[1], status)
            if final is None:
                log.info("other workers of the study still run: the parent run stays RUNNING")

    def _study(self, space):
        import optuna

        from pquant.config.schema import FinetuningConfig
        from pquant.hpo.study import check_directions, default_study_name
        from pquant.tracking.optuna_storage import default_storage, open_storage
        from pquant.tracking.trials import fail_stale_trials

        finetuning = self.config.get("finetuning") or {}
        name = self.study_name or finetuning.get("experiment_name")
        if not name or name == FinetuningConfig().experiment_name:
            name = default_study_name(self.objectives, space)
        target = self.storage or default_storage(name)
        storage = open_storage(target, heartbeat=(self.heartbeat_interval, self.grace_period))
        self._storage = storage
        study = optuna.create_study(study_name=name, storage=storage,
                                    sampler=self._sampler(space),
                                    directions=self._directions(), load_if_exists=True)
        check_directions(study, self._directions(), target)
        fail_stale_trials(study)
        return study, storage, target

    # ------------------------------------------------------------------ sweep
    def sweep(self, arguments: list[str]) -> Any:
        from pquant.hpo.space import reference_search_space, split_search_space
        from pquant.training import interrupt

        assert self.config is not None and self.launcher is not None
        tracker = self._tracker()
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        finetuning = self.config.get("finetuning") or {}
        space, fixed = split_search_space(
            [f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        space = {**reference_search_space(finetuning, self.config), **space}
        if not space:
            raise CompactHydraException(
                "the optuna sweeper needs a search space: give sweep overrides such as "
                "'pruning.sparsity=interval(0.5,0.95)', hydra.sweeper.params, or "
                "finetuning.hyperparameter_search (e.g. finetuning=pdp_sparsity)")
        study, storage, target = self._study(space)
        if tracker is not None:
            self._parent_run(tracker, study, storage, target, sweep_dir)
        n_trials = int(self.n_trials or finetuning.get("num_trials") or 20)
        log.info("study %r (%s): %d trials, %s, %s, search space %s; to continue it later, run "
                 "the same command (or set hydra.sweeper.study_name=%s)", study.study_name,
                 target, n_trials, dict(self.objectives), type(study.sampler).__name__,
                 {k: repr(v) for k, v in space.items()}, study.study_name)
        from pquant.hpo.heartbeat import Heartbeat

        try:
            with Heartbeat(self.heartbeat_interval, self._beat):
                returns = self._trials(study, space, fixed, n_trials, sweep_dir, interrupt)
        except KeyboardInterrupt:
            self._leave_parent("KILLED")
            raise
        except BaseException:
            self._leave_parent("FAILED")
            raise
        self._reap(study)  # trials of workers lost meanwhile end FAIL before the results
        self._write(study, sweep_dir)
        self._leave_parent("FINISHED")
        log.info("study %r: results in %s", study.study_name, sweep_dir / RESULTS_FILE)
        return returns

    def _write(self, study, sweep_dir: Path) -> None:
        from pquant.hpo.results import write_results

        write_results(study, sweep_dir / RESULTS_FILE, list(self.objectives),
                      type(study.sampler).__name__)

    def _trials(self, study, space, fixed, n_trials: int, sweep_dir: Path, interrupt) -> list:
        import optuna

        from pquant.hpo.results import objective_values
        from pquant.hpo.space import serialize, trial_overrides
        from pquant.hpo.study import counted, over_budget
        from pquant.tracking.process import ProcessId
        from pquant.tracking.trials import WORKER_ATTR

        me = str(ProcessId.current())
        allowed_failures = max(1, int(self.max_failure_rate * n_trials))
        launched = failed = 0
        last_error: Optional[BaseException] = None
        returns = []
        while launched < n_trials:
            interrupt.check()
            self._reap(study)
            batch = min(self.n_jobs, n_trials - launched)
            if self.max_trials is not None:
                left = self.max_trials - counted(study.get_trials(deepcopy=False))
                if left <= 0:
                    log.info("study %r reached max_trials=%d", study.study_name,
                             self.max_trials)
                    break
                batch = min(batch, left)
            trials = []
            for _ in range(batch):
                with warnings.catch_warnings():  # heartbeats are recorded by this sweeper
                    warnings.filterwarnings("ignore", "Heartbeat of storage is supposed")
                    trial = study.ask(space)
                trial.set_user_attr(WORKER_ATTR, me)
                if over_budget(study, trial, self.max_trials):
                    break
                trials.append(trial)
            if not trials:
                log.info("study %r reached max_trials=%d", study.study_name, self.max_trials)
                break
            jobs = [fixed + trial_overrides(t.params)
                    + [f"++tracking.tags.optuna_trial={t.number}",
                       f"++tracking.tags.optuna_study={serialize(study.study_name)}"]
                    for t in trials]
            self._in_flight = trials
            self._beat_trials(trials)
            try:
                results = self.launcher.launch(jobs, initial_job_idx=self.job_idx)
            except BaseException:
                for trial in trials:  # in flight: never left RUNNING
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                raise
            finally:
                self._in_flight = []
            self.job_idx += len(jobs)
            launched += len(jobs)
            for trial, result in zip(trials, results):
                try:
                    values = objective_values(result.return_value, list(self.objectives))
                    study.tell(trial, values)
                    self._log_objectives(trial.number, values)
                except Exception as exc:  # noqa: BLE001 - a failed trial is data
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    failed += 1
                    last_error = exc
                    log.warning("trial %d failed: %s", trial.number, exc)
            returns.append(results)
            self._write(study, sweep_dir)
            if failed > allowed_failures:
                raise StudyFailed(
                    f"optuna sweep stopped: {failed} of {launched} trials failed, more than "
                    f"hydra.sweeper.max_failure_rate={self.max_failure_rate} of "
                    f"{n_trials} trials allows ({allowed_failures}). Last error: "
                    f"{type(last_error).__name__}: {last_error}")
        return returns


__all__ = ["PQuantOptunaSweeper", "StudyFailed"]
