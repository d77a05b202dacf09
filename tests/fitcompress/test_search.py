"""FITCompress: ladders, Fisher, the search's decisions, closed set, unreachable goals."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from pquant.config.schema import FitCompressConfig, PruningSchedule
from pquant.fitcompress.fisher import FisherEstimator, fit, take_batches
from pquant.fitcompress.ladders import pruning_ladder, quantization_ladder
from pquant.fitcompress.search import Search
from pquant.fitcompress.space import LayerSpace


# ----------------------------------------------------------------------------- ladders
def test_pruning_ladder_values():
    ladder = pruning_ladder(0.0, -3.0, 40)
    assert len(ladder) == 39  # s_0 = 0 is the unpruned start
    assert ladder[0] == pytest.approx(1 - 10 ** (-3 / 39), abs=0)
    assert ladder[0] == pytest.approx(0.162322, abs=1e-6)
    assert ladder[1] == pytest.approx(1 - 10 ** (-6 / 39), abs=0)
    assert ladder[-1] == pytest.approx(0.999, abs=1e-12)
    assert all(b > a for a, b in zip(ladder, ladder[1:]))
    # steps get finer towards 1
    gaps = [b - a for a, b in zip(ladder, ladder[1:])]
    assert all(g2 < g1 for g1, g2 in zip(gaps, gaps[1:]))
    assert pruning_ladder(0.0, -1.0, 2) == [pytest.approx(0.9)]
    assert pruning_ladder(-1.0, -2.0, 3) == pytest.approx([0.9, 1 - 10 ** -1.5, 0.99])


def test_quantization_ladder_only_goes_down():
    assert quantization_ladder([7.0, 4.0, 3.0, 2.0], 8.0) == (7, 4, 3, 2)
    assert quantization_ladder([7.0, 4.0, 3.0, 2.0], 4.0) == (3, 2)


# ----------------------------------------------------------------------------- Fisher
def test_fisher_matches_a_hand_computed_value():
    """One weight vector w (linear model, MSE): dL_t/dw = 2/B sum_i (w.x_i - y_i) x_i."""
    w0 = torch.tensor([[0.5, -1.0]])
    model = nn.Sequential(nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(w0)
    xs = [torch.tensor([[1.0, 2.0], [0.0, 1.0]]), torch.tensor([[2.0, 0.0], [1.0, 1.0]])]
    ys = [torch.tensor([[1.0], [0.0]]), torch.tensor([[0.0], [2.0]])]
    batches = list(zip(xs, ys))
    est = FisherEstimator(model, [model[0].weight], batches, nn.MSELoss(), min_batches=2,
                          tolerance=0.0)
    (fisher,) = est()
    expected = torch.zeros(1, 2)
    for x, y in batches:
        residual = x @ w0.T - y  # (B, 1)
        grad = 2.0 / len(y) * (residual * x).sum(0, keepdim=True)
        expected += len(y) * grad.square()
    expected /= len(batches)
    # by hand: batch 1 residuals (-2.5, -1.0) -> grad (-2.5, -6.0) -> B*g^2 = (12.5, 72)
    #          batch 2 residuals (1.0, -2.5) -> grad (-0.5, -2.5) -> B*g^2 = (0.5, 12.5)
    assert torch.allclose(expected, torch.tensor([[6.5, 42.25]]))
    assert torch.allclose(fisher, expected)
    assert est.evaluations == 1 and est.batches_used == 2


def test_fisher_stops_early_once_converged():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3))
    x = torch.randn(64 * 40, 4)
    y = torch.randint(0, 3, (64 * 40,))
    batches = [(x[i:i + 64], y[i:i + 64]) for i in range(0, len(y), 64)]
    loose = FisherEstimator(model, [model[0].weight], batches, nn.CrossEntropyLoss(),
                            min_batches=4, tolerance=1e9)
    loose()
    assert loose.batches_used == 8  # first check at 4 sets the reference, the next one stops
    strict = FisherEstimator(model, [model[0].weight], batches, nn.CrossEntropyLoss(),
                             min_batches=4, tolerance=0.0)
    strict()
    assert strict.batches_used == 40


def test_take_batches_cycles_a_short_loader():
    loader = [(torch.zeros(2, 1), torch.zeros(2)), (torch.ones(2, 1), torch.ones(2))]
    batches = take_batches(loader, 5, torch.device("cpu"))
    assert len(batches) == 5 and float(batches[4][0].sum()) == 0.0


def test_fit_distance():
    a = [torch.tensor([1.0, 2.0]), torch.tensor([[0.5]])]
    b = [torch.tensor([0.0, 2.0]), torch.tensor([[0.0]])]
    f = [torch.tensor([3.0, 100.0]), torch.tensor([[4.0]])]
    assert float(fit(a, b, f)) == pytest.approx(3.0 + 4.0 * 0.25)


# ----------------------------------------------------------------------------- search (stub)
class _FixedFisher:
    """A Fisher that is the same at every point: per layer a constant."""

    def __init__(self, values, shapes):
        self.values, self.shapes = values, shapes
        self.evaluations = 0
        self.batches_used = 0

    def __call__(self):
        self.evaluations += 1
        return [torch.full(s, v) for v, s in zip(self.values, self.shapes)]


class _Q(nn.Module):
    """Stand-in for a configured 8-bit weight quantizer (k=1, i=0, f=7, RND, SAT)."""

    round_mode = "RND"
    overflow_mode = "SAT"

    def forward(self, w):
        from pquant.quant.fixed_point import quantize

        return quantize(w, 1, 0, 7, "RND", "SAT")


def _spaces(n_layers=2, shape=(8, 8), prunable=True, seed=0, ladder=(7, 4, 3, 2)):
    from pquant.quant.modes import OverflowMode, RoundMode

    g = torch.Generator().manual_seed(seed)
    spaces = []
    for n in range(n_layers):
        q = _Q()
        q.round_mode, q.overflow_mode = RoundMode.RND, OverflowMode.SAT
        spaces.append(LayerSpace(
            name=f"l{n}", layer=None, master=torch.rand(shape, generator=g) - 0.5, quantizer=q,
            k=1, start_bits=torch.tensor(8.0), ladder=ladder, prunable=prunable,
            group="tensor", pruning_first=True))
    return spaces


def _search(spaces, fisher_values, **cfg):
    if "pruning_schedule" in cfg:
        cfg["pruning_schedule"] = PruningSchedule(**cfg["pruning_schedule"])
    config = FitCompressConfig(enable_fitcompress=True, **cfg)
    est = _FixedFisher(fisher_values, [s.master.shape for s in spaces])
    ladder = pruning_ladder(config.pruning_schedule.start, config.pruning_schedule.end,
                            config.pruning_schedule.steps)
    return Search(spaces, lambda thetas: None, est, ladder, config).run()


def test_first_move_quantizes_the_insensitive_layer():
    """Two layers of the same size; l1 is 1e6 times more sensitive: quantize l0 first."""
    result = _search(_spaces(ladder=(4, 3, 2)), [1e-3, 1e3], compression_goal=0.2)
    assert result.moves[0] == "l0:4"
    assert result.reached
    # ... and the sensitive layer keeps more bits in the end
    assert result.bits[0] is not None and (result.bits[1] is None or
                                           result.bits[1] > result.bits[0])
    swapped = _search(_spaces(ladder=(4, 3, 2)), [1e3, 1e-3], compression_goal=0.2)
    assert swapped.moves[0] == "l1:4"


def test_first_pruning_move_removes_the_least_important_weights():
    spaces = _spaces(n_layers=1, shape=(4, 4))
    spaces[0].master = torch.arange(1, 17, dtype=torch.float32).view(4, 4) / 32
    result = _search(spaces, [1.0], optimize_quantization=False, optimize_pruning=True,
                     compression_goal=0.2, pruning_schedule={"start": 0, "end": -1, "steps": 4})
    first = pruning_ladder(0, -1, 4)[0]
    assert result.moves[0] == f"prune:{first:.4g}"
    mask = result.masks[0].flatten()
    n_pruned = int((~mask).sum())
    # the smallest importances F*w^2 are the smallest magnitudes: a prefix of arange
    assert torch.equal(mask, torch.arange(16) >= n_pruned)


def test_closed_set_never_expands_a_configuration_twice():
    """Full best-first, goal unreachable: every one of the 5x5 configurations is expanded
    exactly once; the other paths into them are counted as duplicates, not evaluated."""
    result = _search(_spaces(), [1.0, 2.0], compression_goal=0.001, greedy_astar=False)
    assert not result.reached
    assert len(result.expanded_keys) == len(set(result.expanded_keys)) == 25
    assert result.nodes_expanded == 25
    assert result.nodes_generated == 24  # every configuration but the root, once
    assert result.duplicates == 2 * 4 * 5 - 24  # 40 edges into 24 nodes
    # approximate: one Fisher per expanded node
    assert result.fisher_evaluations == 25


def test_goal_unreachable_returns_the_closest_node():
    result = _search(_spaces(), [1.0, 1.0], compression_goal=0.01)
    assert not result.reached
    assert result.bits == [2, 2]  # the smallest configuration there is
    assert result.compression == pytest.approx(2 / 32, abs=0.02)


def test_max_expansions_stops_with_the_closest_node():
    result = _search(_spaces(), [1.0, 1.0], compression_goal=0.01, greedy_astar=False,
                     max_expansions=3)
    assert result.nodes_expanded == 3 and not result.reached
    assert result.compression < 8 / 32


# ----------------------------------------------------------------------------- seed fields
def test_greedy_astar_changes_the_search():
    greedy = _search(_spaces(), [1.0, 3.0], compression_goal=0.1)
    full = _search(_spaces(), [1.0, 3.0], compression_goal=0.1, greedy_astar=False)
    # greedy: each expanded node is a child of the one before (one rung of one layer)
    for a, b in zip(greedy.expanded_keys, greedy.expanded_keys[1:]):
        assert sum(y - x for x, y in zip(a[0], b[0])) == 1
    assert full.nodes_expanded > greedy.nodes_expanded
    assert full.path_cost <= greedy.path_cost + 1e-9


def test_approximate_false_computes_a_fisher_per_generated_node():
    approx = _search(_spaces(), [1.0, 3.0], compression_goal=0.1)
    exact = _search(_spaces(), [1.0, 3.0], compression_goal=0.1, approximate=False)
    assert approx.fisher_evaluations == approx.nodes_expanded
    assert exact.fisher_evaluations == exact.nodes_generated + 1  # + the root


def test_f_lambda_changes_the_outcome():
    args = dict(compression_goal=0.1, greedy_astar=False)
    heuristic = _search(_spaces(), [1.0, 3.0], f_lambda=1.0, **args)
    uniform_cost = _search(_spaces(), [1.0, 3.0], f_lambda=0.0, **args)
    assert uniform_cost.nodes_expanded > heuristic.nodes_expanded


def test_compression_goal_changes_the_outcome():
    loose = _search(_spaces(), [1.0, 3.0], compression_goal=0.2)
    tight = _search(_spaces(), [1.0, 3.0], compression_goal=0.1)
    assert loose.compression <= 0.2 and tight.compression <= 0.1
    assert loose.compression > tight.compression


def test_quantization_schedule_changes_the_outcome():
    spaces = _spaces()
    for s in spaces:
        s.ladder = (6,)
    result = _search(spaces, [1.0, 3.0], compression_goal=0.01)
    assert result.bits == [6, 6]


def test_optimize_switches_select_the_moves():
    only_q = _search(_spaces(), [1.0, 3.0], compression_goal=0.1, optimize_pruning=False)
    assert all(not m.startswith("prune") for m in only_q.moves)
    assert only_q.global_sparsity == 0.0
    only_p = _search(_spaces(), [1.0, 3.0], compression_goal=0.1, optimize_quantization=False,
                     optimize_pruning=True)
    assert only_p.moves and all(m.startswith("prune") for m in only_p.moves)
    assert only_p.bits == [None, None] and only_p.global_sparsity > 0.5


def test_pruning_schedule_changes_the_outcome():
    coarse = _search(_spaces(), [1.0, 3.0], compression_goal=0.1, optimize_quantization=False,
                     optimize_pruning=True, pruning_schedule={"start": 0, "end": -1, "steps": 2})
    fine = _search(_spaces(), [1.0, 3.0], compression_goal=0.1, optimize_quantization=False,
                   optimize_pruning=True, pruning_schedule={"start": 0, "end": -3, "steps": 40})
    assert coarse.global_sparsity == pytest.approx(math.floor(0.9 * 128) / 128)
    assert fine.global_sparsity != coarse.global_sparsity


def test_pruning_respects_layers_without_a_pruning_method():
    spaces = _spaces()
    spaces[0].prunable = False
    result = _search(spaces, [1.0, 1.0], compression_goal=0.1, optimize_quantization=False,
                     optimize_pruning=True)
    assert result.masks[0] is None and result.sparsity[0] == 0.0
    assert result.sparsity[1] > 0.5


def test_config_object_is_the_one_read():
    """SimpleNamespace configs work too: the search reads the fields by name, nothing else."""
    cfg = SimpleNamespace(**{**FitCompressConfig().__dict__, "compression_goal": 0.2})
    est = _FixedFisher([1.0, 1.0], [(8, 8), (8, 8)])
    result = Search(_spaces(), lambda t: None, est, [], cfg).run()
    assert result.goal == 0.2 and result.reached
