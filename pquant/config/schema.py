"""Structured-config schemas for the sections of the pquant config.

Field names and defaults follow the user's config reference (PQuantML's documented tables); extra
fields (batch size, optimizer, round mode, ...) are additions. Each schema can check its own value
ranges with ``validate(path)``; type errors are caught earlier by OmegaConf at compose time.

Schemas stored in Hydra's ConfigStore must not be frozen (overrides would fail).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from omegaconf import MISSING

from pquant.config.layer_specific import validate_layer_specific
from pquant.errors import ConfigError, check_choice, check_keep_negatives, check_range, fail
from pquant.quant.granularity import DataGranularity, Granularity
from pquant.quant.modes import OverflowMode, RoundMode
from pquant.quant.registry import resolve_kind
from pquant.quant.spec import QuantSpec

#: Weight-rewinding policy (values contain dashes, hence the functional Enum API).
Rewind = Enum(
    "Rewind",
    {"never": "never", "post-training-stage": "post-training-stage", "every-round": "every-round"},
    module=__name__,
)


def _adam() -> dict[str, Any]:
    return {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1.0e-3, "foreach": True}


# --------------------------------------------------------------------------------- training
@dataclass
class TrainingConfig:
    """The stage schedule: pretraining -> ``rounds`` x ``epochs`` -> fine-tuning."""

    epochs: int = 200  #: epochs per round of the main (pruning) stage
    fine_tuning_epochs: int = 0  #: epochs with frozen masks after the rounds
    pretraining_epochs: int = 50  #: dense warm-up epochs (no pruning, no compression losses)
    rewind: Rewind = Rewind["never"]  #: never | post-training-stage | every-round
    rounds: int = 1  #: number of prune-train rounds
    save_weights_epoch: int = -1  #: epoch of round 0 whose start is snapshotted for rewinding
    # -- additions -------------------------------------------------------------------------
    batch_size: int = 64
    eval_batch_size: int = 1024
    pruning_first: bool = True  #: True: quantize(prune(W)); False: prune(quantize(W))
    optimizer: Any = field(default_factory=_adam)  #: partial optimizer (_target_, _partial_)
    scheduler: Any = None  #: optional partial LR scheduler, stepped once per epoch
    #: task loss (_target_); null: CrossEntropyLoss (classification) / MSELoss (regression)
    loss: Any = None
    #: auto (from the loss, else the data) | classification | regression
    task: str = "auto"
    progress: bool = True  #: progress bar per stage (INFO log lines when stderr is not a TTY)
    #: write <run dir>/checkpoint.pt every N epochs (0: never); continue with training.resume
    checkpoint_every: int = 0
    #: a run directory holding checkpoint.pt: continue that run (its saved config is used)
    resume: Optional[str] = None

    def validate(self, path: str = "training") -> None:
        check_range(f"{path}.checkpoint_every", self.checkpoint_every, lo=0)
        for name in ("epochs", "fine_tuning_epochs", "pretraining_epochs"):
            check_range(f"{path}.{name}", getattr(self, name), lo=0)
        check_range(f"{path}.rounds", self.rounds, lo=1)
        check_range(f"{path}.batch_size", self.batch_size, lo=1)
        check_range(f"{path}.eval_batch_size", self.eval_batch_size, lo=1)
        if self.save_weights_epoch != -1:
            check_range(f"{path}.save_weights_epoch", self.save_weights_epoch, lo=0,
                        hi=max(self.epochs - 1, 0))
        if self.rewind is not Rewind["never"] and self.save_weights_epoch == -1:
            raise ConfigError(
                f"{path}.rewind={self.rewind.value!r} needs a snapshot to rewind to: set "
                f"{path}.save_weights_epoch to an epoch in [0, {max(self.epochs - 1, 0)}] "
                f"(or use {path}.rewind=never), got save_weights_epoch=-1"
            )
        if self.epochs == 0 and self.rounds > 1:
            raise fail(f"{path}.epochs", "be >= 1 when rounds > 1", self.epochs)
        for name in ("optimizer", "loss"):
            node = getattr(self, name)
            if name == "loss" and node is None:
                continue
            if not isinstance(node, dict) or "_target_" not in node:
                raise fail(f"{path}.{name}", "be a config node with a _target_", node)
        check_choice(f"{path}.task", self.task, ("auto", "classification", "regression"))
        _check_optimizer_flags(f"{path}.optimizer", self.optimizer)


def _check_optimizer_flags(path: str, node: dict) -> None:
    """``fused``/``foreach`` must exist in the chosen optimizer: switching to one without the
    flag (e.g. ``fused`` with RMSprop, which has no fused kernel) says how to drop it."""
    import inspect

    from hydra.utils import get_class

    try:
        params = inspect.signature(get_class(str(node["_target_"]))).parameters
    except Exception:  # noqa: BLE001 - an unknown target is reported when it is built
        return
    for flag in ("fused", "foreach"):
        if node.get(flag) and flag not in params:
            raise ConfigError(
                f"{path}.{flag}={node[flag]!r} is not an option of {node['_target_']} (torch "
                f"optimizers with a fused kernel: Adam, AdamW, SGD, Adagrad). Drop it with "
                f"~{path}.{flag}, got {flag}={node[flag]!r} with _target_={node['_target_']!r}"
            )


# --------------------------------------------------------------------------------- quantization
@dataclass
class QuantizationConfig:
    """Fixed-point settings. Formats are ``(keep_negatives, integer_bits, fractional_bits)``.

    The reference defaults every bit count to 0, which is not a usable format; the schema keeps
    those defaults but the ``quantization=fixed`` preset sets working 8-bit formats.
    """

    default_data_keep_negatives: int = 0
    default_data_integer_bits: int = 0
    default_data_fractional_bits: int = 0
    default_weight_keep_negatives: int = 0
    default_weight_integer_bits: int = 0
    default_weight_fractional_bits: int = 0
    quantize_input: bool = True
    quantize_output: bool = True
    enable_quantization: bool = True
    hgq_gamma: float = 0.0
    hgq_beta: float = 0.0
    layer_specific: dict[str, Any] = field(default_factory=dict)
    use_hgq: bool = False
    use_real_tanh: bool = False
    overflow_mode_data: OverflowMode = OverflowMode.SAT
    overflow_mode_parameters: OverflowMode = OverflowMode.SAT
    round_mode: RoundMode = RoundMode.RND
    # -- additions -------------------------------------------------------------------------
    #: weights: one format per tensor, per output channel, or per weight (biases follow it
    #: with HGQ; in fixed point they stay per tensor unless layer_specific says otherwise)
    granularity: Granularity = Granularity.per_tensor
    #: data (HGQ only): one learned format per tensor, or per feature/channel
    data_granularity: DataGranularity = DataGranularity.per_tensor
    #: fixed-point data formats follow the batch range in training, frozen in eval
    dynamic_data_quantization: bool = False
    #: ReLU learns a power-of-two input scale x * 2**round(m)
    use_relu_multiplier: bool = False
    #: the quantizer kind: ``{_target_: <Quantizer class>, <its settings>}`` or a kind name
    #: (fixed, hgq, dynamic, ...; see pquant.quant.registry); null: from use_hgq and
    #: dynamic_data_quantization. Validation replaces it by the kind's config object.
    quantizer: Any = None

    def data_spec(self) -> QuantSpec:
        return QuantSpec(self.default_data_keep_negatives, self.default_data_integer_bits,
                         self.default_data_fractional_bits, self.round_mode,
                         self.overflow_mode_data)

    def weight_spec(self) -> QuantSpec:
        return QuantSpec(self.default_weight_keep_negatives, self.default_weight_integer_bits,
                         self.default_weight_fractional_bits, self.round_mode,
                         self.overflow_mode_parameters)

    def resolve_quantizer(self, path: str = "quantization") -> None:
        """Resolve :attr:`quantizer` to its kind's config and reconcile the boolean selectors.

        ``use_hgq`` and ``dynamic_data_quantization`` are the reference's names for the ``hgq``
        and ``dynamic`` kinds: with no quantizer (or the ``fixed`` one) they pick the kind; with
        another kind they must agree with it (the hgq and dynamic presets set both). A
        contradiction is an error naming both settings.
        """
        if self.dynamic_data_quantization and self.use_hgq:
            raise ConfigError(
                f"{path}.dynamic_data_quantization=true applies to fixed-point data formats; "
                f"with {path}.use_hgq=true the bit-widths are learned instead. Allowed with "
                f"HGQ: false, got true")
        try:
            kind = resolve_kind("fixed" if self.quantizer is None else self.quantizer,
                                f"{path}.quantizer")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        for flag, name in (("use_hgq", "hgq"), ("dynamic_data_quantization", "dynamic")):
            wanted = getattr(self, flag)
            if wanted and kind.name == "fixed":
                kind = resolve_kind(name, f"{path}.quantizer")
            elif wanted and kind.name != name:
                raise ConfigError(
                    f"{path}.{flag}=true selects the {name!r} quantizer but {path}.quantizer is "
                    f"{kind.name!r} (_target_={kind._target_}): set {path}.{flag}=false to keep "
                    f"{kind.name!r}, or pick quantization={name}; got {flag}=true")
            elif not wanted and kind.name == name:
                raise ConfigError(
                    f"{path}.{flag}=false contradicts {path}.quantizer {name!r} "
                    f"(_target_={kind._target_}), which is what {flag}=true selects: set "
                    f"{path}.{flag}=true, or pick another quantizer (e.g. quantization=fixed); "
                    f"got {flag}=false")
        self.quantizer = kind

    def validate(self, path: str = "quantization") -> None:
        self.resolve_quantizer(path)
        for kind in ("data", "weight"):
            kn = f"{path}.default_{kind}_keep_negatives"
            check_keep_negatives(kn, getattr(self, f"default_{kind}_keep_negatives"))
            spec = self.data_spec() if kind == "data" else self.weight_spec()
            width = spec.k + spec.i + spec.f
            if self.enable_quantization and width < 1:
                raise ConfigError(
                    f"{path}: the default {kind} format must be at least 1 bit wide "
                    f"(keep_negatives + integer_bits + fractional_bits >= 1), got "
                    f"k={spec.k}, i={spec.i}, f={spec.f} ({width} bits); set "
                    f"{path}.default_{kind}_integer_bits / _fractional_bits, or pick the "
                    f"8-bit preset with quantization=fixed"
                )
        for kind, mode in (("data", "overflow_mode_data"), ("weight", "overflow_mode_parameters")):
            k = getattr(self, f"default_{kind}_keep_negatives")
            if getattr(self, mode) is OverflowMode.WRAP_SM and k == 0:
                raise ConfigError(
                    f"{path}.{mode}=WRAP_SM needs signed {kind} formats: ap_fixed has no "
                    f"ap_ufixed<..., AP_WRAP_SM>. Set {path}.default_{kind}_keep_negatives=1 or "
                    f"use WRAP, SAT or SAT_SYM; got default_{kind}_keep_negatives=0")
        check_range(f"{path}.hgq_gamma", self.hgq_gamma, lo=0)
        check_range(f"{path}.hgq_beta", self.hgq_beta, lo=0)
        if (self.data_granularity is DataGranularity.per_feature
                and not self.quantizer.quantizer_class().per_feature_data):
            raise ConfigError(
                f"{path}.data_granularity=per_feature needs learnable bit-widths "
                f"({path}.use_hgq=true, or a quantizer kind with per-feature formats); "
                f"{self.quantizer.name!r} data formats are per tensor; allowed without HGQ: "
                f"per_tensor, got per_feature")
        validate_layer_specific(self.layer_specific, f"{path}.layer_specific")


# --------------------------------------------------------------------------------- fitcompress
@dataclass
class PruningSchedule:
    """Logarithmic pruning ladder: sparsity ``1 - 10**x`` for ``steps`` values of ``x`` spaced
    evenly from ``start`` to ``end`` (base 10)."""

    start: float = 0.0
    end: float = -3.0
    steps: int = 40


@dataclass
class FitCompressConfig:
    """FITCompress search settings (reference field names and defaults, plus the Fisher budget).

    Zandonati et al., "FIT: A Metric for Model Sensitivity" (ICLR 2023) and "Towards Optimal
    Compression: Joint Pruning and Quantization" (arXiv 2302.07612). See :mod:`pquant.fitcompress`.
    """

    enable_fitcompress: bool = False
    optimize_quantization: bool = True
    quantization_schedule: list[float] = field(default_factory=lambda: [7.0, 4.0, 3.0, 2.0])
    pruning_schedule: PruningSchedule = field(default_factory=PruningSchedule)
    compression_goal: float = 0.10
    optimize_pruning: bool = False
    greedy_astar: bool = True
    approximate: bool = True
    f_lambda: float = 1.0
    # -- additions -------------------------------------------------------------------------
    fisher_batches: int = 32  #: most training batches per Fisher estimate
    fisher_min_batches: int = 8  #: batches before the convergence test may stop the estimate
    #: stop when the Fisher trace changed by less than this fraction over the last 4 batches
    fisher_tolerance: float = 0.02
    max_expansions: int = 1000  #: nodes expanded before the search gives up (closest node wins)

    def validate(self, path: str = "fitcompress") -> None:
        check_range(f"{path}.compression_goal", self.compression_goal, lo=0, hi=1, lo_open=True)
        check_range(f"{path}.f_lambda", self.f_lambda, lo=0)
        ps = self.pruning_schedule
        check_range(f"{path}.pruning_schedule.steps", ps.steps, lo=2)
        check_range(f"{path}.pruning_schedule.start", ps.start, hi=0)
        if not ps.end < ps.start:
            raise fail(f"{path}.pruning_schedule.end", f"be below pruning_schedule.start="
                       f"{ps.start:g} (sparsity 1 - 10**x grows as x falls)", ps.end)
        sched = list(self.quantization_schedule)
        for n, bits in enumerate(sched):
            if not float(bits).is_integer() or not 1 <= bits <= 31:
                raise fail(f"{path}.quantization_schedule[{n}]", "be a whole number of bits in "
                           "[1, 31]", bits)
        if any(b >= a for a, b in zip(sched, sched[1:])):
            raise fail(f"{path}.quantization_schedule", "be strictly decreasing (each move "
                       "lowers a layer's width)", sched)
        if self.optimize_quantization and not sched:
            raise fail(f"{path}.quantization_schedule", "list at least one width when "
                       "optimize_quantization=true", sched)
        check_range(f"{path}.fisher_batches", self.fisher_batches, lo=1)
        check_range(f"{path}.fisher_min_batches", self.fisher_min_batches, lo=1,
                    hi=self.fisher_batches)
        check_range(f"{path}.fisher_tolerance", self.fisher_tolerance, lo=0)
        check_range(f"{path}.max_expansions", self.max_expansions, lo=1)
        if self.enable_fitcompress and not (self.optimize_quantization or self.optimize_pruning):
            raise ConfigError(
                f"{path}: with enable_fitcompress=true the search needs a kind of move: set "
                f"{path}.optimize_quantization=true and/or {path}.optimize_pruning=true, got "
                f"both false")

    def check_composition(self, quantization: QuantizationConfig, pruning,
                          path: str = "fitcompress") -> None:
        """Settings that only make sense together with the other sections."""
        if not self.enable_fitcompress:
            return
        if self.optimize_quantization and not quantization.enable_quantization:
            raise ConfigError(
                f"{path}.optimize_quantization=true searches weight bit-widths, but quantization "
                f"is off (quantization.enable_quantization=false): pick a quantization preset "
                f"(quantization=fixed or hgq) or set {path}.optimize_quantization=false "
                f"{path}.optimize_pruning=true; got optimize_quantization=true")
        if self.optimize_pruning and not pruning.enable_pruning:
            raise ConfigError(
                f"{path}.optimize_pruning=true chooses masks for the pruned layers, but pruning "
                f"is off (pruning.enable_pruning=false, e.g. pruning=none): pick a pruning "
                f"method (the searched masks replace its own) or set "
                f"{path}.optimize_pruning=false; got optimize_pruning=true")
        k = quantization.default_weight_keep_negatives
        if self.optimize_quantization and k and min(self.quantization_schedule) < 2:
            raise fail(f"{path}.quantization_schedule", "hold widths >= 2 for signed weights "
                       "(quantization.default_weight_keep_negatives=1: a sign bit plus at least "
                       "one magnitude bit)", list(self.quantization_schedule))


# --------------------------------------------------------------------------------- finetuning
@dataclass
class SamplerConfig:
    type: str = "TPESampler"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class SearchSpaceConfig:
    numerical: dict[str, Any] = field(default_factory=dict)
    categorical: dict[str, Any] = field(default_factory=dict)


@dataclass
class FinetuningConfig:
    """Hyper-parameter search section (the reference's ``hpo_parameters``)."""

    experiment_name: str = "experiment_1"
    #: MLflow registered-model name: each run that logs its model (tracking.log_model) adds a
    #: version of it, pointing at the run's model_final.pt
    model_name: str = "example_model"
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    num_trials: int = 0
    hyperparameter_search: SearchSpaceConfig = field(default_factory=SearchSpaceConfig)

    def validate(self, path: str = "finetuning") -> None:
        check_range(f"{path}.num_trials", self.num_trials, lo=0)


# --------------------------------------------------------------------------------- tracking
@dataclass
class TrackingConfig:
    """Where runs are recorded. ``_target_`` picks the tracker (MLflow or none)."""

    _target_: str = "pquant.tracking.base.NullTracker"
    experiment_name: str = "pquant"
    #: tracking URI; null -> $MLFLOW_TRACKING_URI, else sqlite:///<start dir>/outputs/mlflow.db
    uri: Optional[str] = None
    run_name: Optional[str] = None
    log_model: bool = True  #: log the final state dict as an artifact
    #: registered-model name for the logged model (the mlflow preset: finetuning.model_name)
    model_name: Optional[str] = None
    tags: dict[str, str] = field(default_factory=dict)  #: extra tags for every run

    def validate(self, path: str = "tracking") -> None:
        if not self.experiment_name:
            raise fail(f"{path}.experiment_name", "be a non-empty string", self.experiment_name)


# --------------------------------------------------------------------------------- top level
@dataclass
class PQuantConfig:
    """The primary config: the sections plus run-wide settings."""

    seed: int = 42
    device: str = "auto"  #: auto | cpu | cuda | cuda:N
    data: Any = MISSING
    model: Any = MISSING
    training: Any = MISSING
    pruning: Any = MISSING
    quantization: Any = MISSING
    finetuning: Any = MISSING
    fitcompress: Any = MISSING
    tracking: Any = MISSING
    export: Any = None  #: the export group (none / qonnx / hls4ml / both)
    distillation: Any = None  #: knowledge distillation (group ``distillation``: none | kd)
