"""Every option of every config group composes, validates and builds."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from pquant import add_compression_layers
from pquant.config.compose import CONF_DIR
from pquant.config.sections import sections

GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir())
OPTIONS = [(g, f.stem) for g in GROUPS for f in sorted((CONF_DIR / g).glob("*.yaml"))]


def test_the_five_sections_are_groups():
    for section in ("training", "pruning", "quantization", "finetuning", "fitcompress"):
        assert section in GROUPS


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_builds(compose, group, option, tmp_path):
    extra = []
    if group == "data" and option in ("files", "jets"):  # a generated local file, no network
        from tests.data.make_files import jets_csv

        extra = [f"data.path={jets_csv(tmp_path, n=100)}"]
        extra += ["data.label=class"] if option == "files" else []
    cfg = compose([f"{group}={option}", *extra])
    s = sections(cfg)
    assert s.training.epochs >= 0
    data = instantiate(cfg.data)
    model = instantiate(cfg.model, input_size=data.num_features,
                        output_size=getattr(data, "num_outputs", data.num_classes))
    converted = add_compression_layers(model, cfg)
    converted(data.example_input(4))
    tracker = instantiate(cfg.tracking)
    assert hasattr(tracker, "log_metrics")


def test_sections_are_typed(compose):
    from pquant.config.schema import Rewind
    from pquant.pruning.pdp import PDPConfig
    from pquant.quant.modes import OverflowMode, RoundMode

    s = sections(compose([]))
    assert isinstance(s.pruning, PDPConfig)
    assert s.quantization.round_mode is RoundMode.RND
    assert s.quantization.overflow_mode_data is OverflowMode.SAT
    assert s.training.rewind is Rewind["never"]


def test_reference_defaults_are_kept(compose):
    """Field names and defaults of the user's config reference."""
    s = sections(compose([]))
    t = s.training
    assert (t.epochs, t.fine_tuning_epochs, t.pretraining_epochs, t.rounds,
            t.save_weights_epoch, t.rewind.value) == (200, 0, 50, 1, -1, "never")
    p = s.pruning
    assert (p.pruning_method, p.epsilon, p.sparsity, p.temperature, p.structured_pruning) == (
        "pdp", 0.015, 0.8, 1e-5, False)
    assert (p.enable_pruning, p.disable_pruning_for_layers, p.threshold_decay) == (True, [], 0.0)
    q = s.quantization
    assert (q.quantize_input, q.quantize_output, q.enable_quantization, q.use_hgq,
            q.use_real_tanh, q.layer_specific) == (True, True, True, False, False, {})
    from pquant.config.schema import QuantizationConfig

    schema = QuantizationConfig()  # the presets set working HGQ coefficients; the schema keeps 0
    assert (schema.hgq_gamma, schema.hgq_beta, schema.quantize_output) == (0.0, 0.0, True)
    f = s.fitcompress
    assert (f.enable_fitcompress, f.optimize_quantization, f.quantization_schedule,
            f.compression_goal, f.optimize_pruning, f.greedy_astar, f.approximate,
            f.f_lambda) == (False, True, [7.0, 4.0, 3.0, 2.0], 0.10, False, True, True, 1.0)
    assert (f.pruning_schedule.start, f.pruning_schedule.end, f.pruning_schedule.steps) == (
        0, -3, 40)


def test_schema_defaults_keep_the_reference_zero_bits():
    from pquant.config.schema import QuantizationConfig

    q = QuantizationConfig()
    assert (q.default_data_keep_negatives, q.default_data_integer_bits,
            q.default_data_fractional_bits, q.default_weight_keep_negatives,
            q.default_weight_integer_bits, q.default_weight_fractional_bits) == (0,) * 6


def test_fixed_preset_is_a_working_8_bit_setting(compose):
    q = sections(compose(["quantization=fixed"])).quantization
    assert q.data_spec().bits == 8 and q.weight_spec().bits == 8
    assert q.default_data_keep_negatives == 1  # standardised inputs keep their sign


def test_library_dict_config(tiny_mlp):
    """A plain dict with some sections works without Hydra."""
    from pquant.nn.dense import PQDense

    cfg = {"pruning": {"pruning_method": "pdp", "sparsity": 0.5},
           "quantization": {"default_weight_keep_negatives": 1,
                            "default_weight_fractional_bits": 7,
                            "default_data_keep_negatives": 1, "default_data_integer_bits": 3,
                            "default_data_fractional_bits": 4}}
    model = add_compression_layers(tiny_mlp(), cfg)
    assert isinstance(model.fc1, PQDense)
    assert model.fc1.pruning.config.sparsity == 0.5
