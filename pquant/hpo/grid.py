"""Search spaces for Optuna's GridSampler (which needs explicit value lists)."""

from __future__ import annotations

from pquant.errors import ConfigError


def grid_space(space: dict) -> dict[str, list]:
    """Every discrete distribution as its list of values; continuous ones are an error."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    grid: dict[str, list] = {}
    for name, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            grid[name] = list(dist.choices)
        elif isinstance(dist, IntDistribution) and not dist.log:
            grid[name] = list(range(dist.low, dist.high + 1, dist.step))
        elif isinstance(dist, FloatDistribution) and dist.step is not None and not dist.log:
            n = int(round((dist.high - dist.low) / dist.step)) + 1
            grid[name] = [round(dist.low + k * dist.step, 12) for k in range(n)]
        else:
            raise ConfigError(f"hydra/sweeper/pquant_sampler=grid needs discrete values for {name}: "
                              "use choice(...) or range(...), not interval(...)")
    return grid


def ask_tell_grid_sampler(**kwargs):
    """Optuna's GridSampler, minus its ``study.stop()`` when the grid is exhausted (only legal
    inside ``study.optimize``; the sweeper counts its trials itself)."""
    from optuna.samplers import GridSampler

    class AskTellGridSampler(GridSampler):
        def after_trial(self, study, trial, state, values) -> None:
            return None

    AskTellGridSampler.__name__ = "GridSampler"
    return AskTellGridSampler(**kwargs)
