"""Bad input fails before training with one message: the key, what is allowed, what was given."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException

from pquant import ConfigError, add_compression_layers
from pquant.config.sections import sections

RANGE_CASES = [
    (["pruning.sparsity=1.2"], ["pruning.sparsity", "[0, 1)", "1.2"]),
    (["pruning.sparsity=1.0"], ["pruning.sparsity", "[0, 1)", "1.0"]),
    (["pruning.sparsity=-0.1"], ["pruning.sparsity", "[0, 1)", "-0.1"]),
    (["pruning.epsilon=0"], ["pruning.epsilon", "(0, 1]", "0"]),
    (["training.epochs=-1"], ["training.epochs", "[0, inf]", "-1"]),
    (["training.rounds=0"], ["training.rounds", "[1, inf]", "0"]),
    (["quantization.default_data_keep_negatives=2"],
     ["quantization.default_data_keep_negatives", "0 or 1", "2"]),
    (["quantization.default_weight_integer_bits=-1",
      "quantization.default_weight_fractional_bits=0",
      "quantization.default_weight_keep_negatives=0"],
     ["default weight format", "at least 1 bit", "k=0, i=-1, f=0"]),
    (["pruning.pruning_method=wanda"], ["pruning.pruning_method", "'pdp'", "'wanda'"]),
    (["training.rewind=every-round"], ["training.save_weights_epoch", "every-round", "-1"]),
    (["training.save_weights_epoch=500"], ["training.save_weights_epoch", "[0, 199]", "500"]),
    (["quantization.data_granularity=per_feature"],
     ["quantization.data_granularity=per_feature", "use_hgq=true", "per_tensor"]),
    (["quantization.use_hgq=true", "quantization.dynamic_data_quantization=true"],
     ["dynamic_data_quantization", "Allowed with HGQ: false"]),
    (["+quantization.layer_specific={fc1: {weight: {integer_bits: 1.5}}}"],
     ["quantization.layer_specific.fc1.weight.integer_bits", "integer", "1.5"]),
    (["+quantization.layer_specific={fc1: {weights: {integer_bits: 1}}}"],
     ["quantization.layer_specific.fc1", "sections", "weights"]),
    (["+quantization.layer_specific={fc1: {input: {granularity: per_channel}}}"],
     ["quantization.layer_specific.fc1.input", "keys", "granularity"]),
    (["fitcompress=on", "quantization=none"],
     ["fitcompress.optimize_quantization=true", "quantization=fixed", "got optimize_quantization"]),
    (["fitcompress=on", "pruning=none", "fitcompress.optimize_pruning=true"],
     ["fitcompress.optimize_pruning=true", "pruning=none", "got optimize_pruning=true"]),
    (["fitcompress.quantization_schedule=[4,7]"],
     ["fitcompress.quantization_schedule", "strictly decreasing", "[4.0, 7.0]"]),
    (["fitcompress.quantization_schedule=[4.5]"],
     ["fitcompress.quantization_schedule[0]", "[1, 31]", "4.5"]),
    (["fitcompress=on", "fitcompress.quantization_schedule=[4,1]"],
     ["fitcompress.quantization_schedule", ">= 2 for signed weights", "[4.0, 1.0]"]),
    (["fitcompress.pruning_schedule.start=0.5"],
     ["fitcompress.pruning_schedule.start", "[-inf, 0]", "0.5"]),
    (["fitcompress.pruning_schedule.end=0"],
     ["fitcompress.pruning_schedule.end", "below pruning_schedule.start", "0"]),
    (["fitcompress.compression_goal=0"], ["fitcompress.compression_goal", "(0, 1]", "0"]),
    (["fitcompress.f_lambda=-1"], ["fitcompress.f_lambda", "[0, inf]", "-1"]),
    (["fitcompress.fisher_batches=0"], ["fitcompress.fisher_batches", "[1, inf]", "0"]),
    (["fitcompress=on", "fitcompress.optimize_quantization=false"],
     ["fitcompress.optimize_quantization=true", "optimize_pruning=true", "both false"]),
    (["training.optimizer._target_=torch.optim.RMSprop", "+training.optimizer.fused=true",
      "~training.optimizer.foreach"],
     ["training.optimizer.fused", "torch.optim.RMSprop", "~training.optimizer.fused"]),
]


@pytest.mark.parametrize(("overrides", "fragments"), RANGE_CASES,
                         ids=[" ".join(c[0]) for c in RANGE_CASES])
def test_range_errors(compose, overrides, fragments):
    cfg = compose(overrides)
    with pytest.raises(ConfigError) as err:
        sections(cfg)
    message = str(err.value)
    for fragment in fragments:
        assert fragment in message, message


COMPOSE_CASES = [
    (["pruning.spars=0.5"], "spars"),
    (["training.epochs=abc"], "training.epochs"),
    (["quantization.round_mode=NEAREST"], "RND_CONV"),
    (["quantization.overflow_mode_data=CLIP"], "SAT_SYM"),
    (["training.rewind=sometimes"], "post-training-stage"),
    (["quantization.quantize_input=maybe"], "quantize_input"),
]


def test_optimizer_with_a_fused_flag_it_has_builds(compose):
    s = sections(compose(["training.optimizer._target_=torch.optim.SGD",
                          "+training.optimizer.fused=true", "~training.optimizer.foreach"]))
    assert s.training.optimizer["fused"] is True


@pytest.mark.parametrize(("overrides", "fragment"), COMPOSE_CASES,
                         ids=[" ".join(c[0]) for c in COMPOSE_CASES])
def test_schema_errors_at_compose_time(compose, overrides, fragment):
    with pytest.raises(ConfigCompositionException) as err:
        compose(overrides)
    text = str(err.value) + str(err.value.__cause__ or "")
    assert fragment in text, text


def test_unknown_group_option_lists_the_options(compose):
    with pytest.raises(Exception) as err:
        compose(["pruning=foo"])
    assert "pdp" in str(err.value) and "none" in str(err.value)


def test_unknown_layer_in_disable_list(compose, tiny_mlp):
    cfg = compose(["pruning.disable_pruning_for_layers=[fc1,encoder.fc9]"])
    with pytest.raises(ConfigError) as err:
        add_compression_layers(tiny_mlp(), cfg)
    message = str(err.value)
    assert "encoder.fc9" in message and "'fc1'" in message and "'out'" in message
    assert "fc1" not in message.split("got")[1].replace("encoder.fc9", "")


def test_unknown_key_message_lists_allowed_keys():
    from pquant.config.cli_check import unknown_key_message

    message = unknown_key_message(["pruning.spars=0.5"])
    assert "pruning.spars" in message and "sparsity" in message and "=0.5" in message


def _cli(*args, env_extra=None):
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    env.pop("HYDRA_FULL_ERROR", None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "pquant", *args], capture_output=True,
                          text=True, env=env, timeout=120)


CLI_CASES = [
    (["pruning.sparsity=1.2"], "pruning.sparsity must be in [0, 1), got 1.2"),
    (["pruning.spars=0.5"], "Allowed keys of pruning"),
    (["quantization.round_mode=NEAREST"], "must be one of [TRN, RND"),
    (["training.epochs=-3"], "training.epochs must be in [0, inf], got -3"),
]


@pytest.mark.parametrize(("overrides", "fragment"), CLI_CASES,
                         ids=[" ".join(c[0]) for c in CLI_CASES])
def test_cli_bad_input_exits_nonzero_without_traceback(overrides, fragment, tmp_path):
    result = _cli(*overrides, "tracking=none", f"hydra.run.dir={tmp_path}")
    assert result.returncode != 0
    assert fragment in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_cli_full_error_shows_traceback(tmp_path):
    result = _cli("pruning.sparsity=1.2", "tracking=none", f"hydra.run.dir={tmp_path}",
                  env_extra={"HYDRA_FULL_ERROR": "1"})
    assert result.returncode != 0
    assert "Traceback" in result.stderr
