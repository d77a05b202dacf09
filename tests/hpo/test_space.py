"""Override grammar -> Optuna distributions, and values back to overrides."""

from __future__ import annotations

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from pquant import ConfigError
from pquant.hpo.grid import grid_space
from pquant.hpo.space import parse, serialize, split_search_space

CASES = [
    ("x=interval(0.1, 0.9)", FloatDistribution(0.1, 0.9)),
    ("x=interval(1, 5)", FloatDistribution(1.0, 5.0)),
    ("x=tag(log, interval(1e-4, 1))", FloatDistribution(1e-4, 1.0, log=True)),
    ("x=range(2, 10, 2)", IntDistribution(2, 8, step=2)),
    ("x=range(1, 5)", IntDistribution(1, 4)),
    ("x=range(1, 6, 2)", IntDistribution(1, 5, step=2)),
    ("x=tag(log, range(1, 65))", IntDistribution(1, 64, log=True)),
    ("x=range(0.1, 0.5, 0.1)", FloatDistribution(0.1, 0.4, step=0.1)),
    ("x=a,b,c", CategoricalDistribution(["a", "b", "c"])),
    ("x=choice(1, 2.5, true, abc)", CategoricalDistribution([1, 2.5, True, "abc"])),
    ("x=choice('a,b', c)", CategoricalDistribution(["a,b", "c"])),
]


@pytest.mark.parametrize(("override", "expected"), CASES, ids=[c[0] for c in CASES])
def test_override_to_distribution(override, expected):
    space, fixed = split_search_space([override])
    assert space == {"x": expected}
    assert fixed == []


def test_fixed_overrides_pass_through_in_order():
    space, fixed = split_search_space(["a=1", "b=interval(0,1)", "+c.d=x", "pruning=wanda"])
    assert list(space) == ["b"]
    assert fixed == ["a=1", "+c.d=x", "pruning=wanda"]


@pytest.mark.parametrize("bad", ["x=tag(log, choice(1,2))", "x=tag(log, range(1, 9, 2))",
                                 "x=range(5, 1)", "hydra.job.name=a,b"])
def test_bad_sweeps_are_clear_errors(bad):
    with pytest.raises(ConfigError):
        split_search_space([bad])


SERIAL = [
    (None, "null"), (True, "true"), (False, "false"), (3, "3"), (0.25, "0.25"),
    (1e-07, "1e-07"), ("pdp", "pdp"), ("a,b", "'a,b'"), ("it's", "'it\\'s'"),
    ("true", "'true'"), ("null", "'null'"), ("1.5", "'1.5'"), ("x y", "'x y'"),
    ("f(1)", "'f(1)'"), ("k=v", "'k=v'"),
]


@pytest.mark.parametrize(("value", "text"), SERIAL, ids=[repr(v) for v, _ in SERIAL])
def test_values_serialise_to_overrides_that_parse_back(value, text):
    assert serialize(value) == text
    (override,) = parse([f"key={text}"])
    assert override.value() == value


def test_grid_space_needs_discrete_values():
    space, _ = split_search_space(["a=range(1, 4)", "b=choice(x, y)", "c=range(0.5, 1.0, 0.25)"])
    assert grid_space(space) == {"a": [1, 2, 3], "b": ["x", "y"], "c": [0.5, 0.75]}
    space, _ = split_search_space(["a=interval(0, 1)"])
    with pytest.raises(ConfigError, match="discrete"):
        grid_space(space)


def test_reference_hpo_block(compose):
    from pquant.hpo.space import reference_search_space

    cfg = compose(["pruning=wanda"])
    block = {"hyperparameter_search": {
        "numerical": {"sparsity": [0.5, 0.9], "t_delta": [10, 50, 10], "training.epochs": [5, 9]},
        "categorical": {"calculate_pruning_budget": [True, False]}}}
    space = reference_search_space(block, cfg)
    assert space == {
        "pruning.sparsity": FloatDistribution(0.5, 0.9),
        "pruning.t_delta": IntDistribution(10, 50, step=10),
        "training.epochs": IntDistribution(5, 9),
        "pruning.calculate_pruning_budget": CategoricalDistribution([True, False]),
    }
    with pytest.raises(ConfigError, match="'learning_rate' is not a setting"):
        reference_search_space({"hyperparameter_search": {"numerical": {
            "learning_rate": [1e-5, 1e-3]}}}, cfg)
    with pytest.raises(ConfigError, match="step"):  # the reference's finetuning.yaml example
        reference_search_space({"hyperparameter_search": {"numerical": {
            "sparsity": [1e-5, 1e-3, 0.2]}}}, cfg)
