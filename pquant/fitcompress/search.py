"""Best-first (A*) search over per-layer weight widths and a global pruning ladder.

Zandonati et al., "Towards Optimal Compression: Joint Pruning and Quantization" (arXiv 2302.07612).

A node is a configuration -- one rung of the quantization ladder per layer and one rung of the
pruning ladder -- plus the masks that led to it. Moves from node ``n``:

* quantization (``optimize_quantization``): one layer one rung down its ladder;
* pruning (``optimize_pruning``): the whole model to the next global sparsity ``s``: the
  ``floor(s * N)`` prunable weights of least importance ``F_n * theta_n**2`` are masked (masked
  weights stay masked; layers in ``disable_pruning_for_layers`` take no part).

Costs of a neighbour ``m`` (``F_n`` the Fisher at ``n``)::

    g(m) = g(n) + sqrt(FIT(theta_n, theta_m; F_n))        path cost
    h(m) = |c(m) - goal| * sqrt(sum F * theta_m**2)       heuristic (F = F_n if approximate,
                                                           else the Fisher at m)
    total(m) = g(m) + f_lambda * h(m)

with ``c`` the size relative to float32 (:mod:`pquant.fitcompress.ladders`). The open node of
least total is expanded next; a popped node with ``c <= goal`` ends the search. ``greedy_astar``
discards the other open nodes at every step; otherwise the search is a full best-first search
with a closed set: a configuration generated once is never evaluated again (later paths to it
are counted in ``duplicates``). ``approximate`` computes one Fisher per expanded node; otherwise
every generated node gets its own. When the goal cannot be reached (ladders exhausted, or
``max_expansions``), the node closest to the goal is returned with ``reached=False``.

All tensors stay on the run's device; each expansion syncs with the host once (its neighbours'
costs as one list).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import time
from dataclasses import dataclass, field

import torch

from pquant.fitcompress.fisher import FisherEstimator, sensitivity
from pquant.fitcompress.ladders import REFERENCE_BITS, kept_bits
from pquant.fitcompress.space import LayerSpace

log = logging.getLogger(__name__)


@dataclass
class Node:
    """A configuration and what the search knows about it."""

    widx: tuple[int, ...]  #: per layer: rung of its ladder, -1 = as configured
    pidx: int  #: rung of the pruning ladder, -1 = unpruned
    masks: tuple  #: per layer: bool mask or None (dense)
    g: float = 0.0
    h: float = 0.0
    total: float = 0.0
    c: float = 1.0
    fisher: list | None = None
    moves: tuple[str, ...] = ()

    @property
    def key(self) -> tuple:
        return self.widx, self.pidx


@dataclass
class SearchResult:
    """What the search chose and how it got there.

    Attributes:
        layers: layer names, in model order.
        bits: per layer the chosen width, or None where the layer keeps its configured format.
        masks: per layer the chosen bool mask, or None (dense).
        sparsity: per layer fraction of masked weights.
        global_sparsity: the pruning rung reached (fraction of prunable weights masked).
        compression: size of the weights relative to float32 at the chosen node.
        goal: ``compression_goal``.
        reached: whether ``compression <= goal``.
        path_cost: ``g`` of the chosen node (accumulated sqrt-FIT along its path).
        moves: the moves of its path, e.g. ``("fc1:4", "prune:0.163")``.
        nodes_expanded / nodes_generated / duplicates / fisher_evaluations / fisher_batches:
            search trace counters.
        expanded_keys: the configurations expanded, in order (for inspection and tests).
        search_time_s: wall time of the search.
    """

    layers: list[str]
    bits: list[int | None]
    masks: list
    sparsity: list[float]
    global_sparsity: float
    compression: float
    goal: float
    reached: bool
    path_cost: float
    moves: tuple[str, ...]
    nodes_expanded: int = 0
    nodes_generated: int = 0
    duplicates: int = 0
    fisher_evaluations: int = 0
    fisher_batches: int = 0
    expanded_keys: list = field(default_factory=list)
    search_time_s: float = 0.0


class Search:
    """One search over ``spaces``.

    Args:
        spaces: the layers (see :func:`pquant.fitcompress.space.layer_spaces`).
        load: loads a list of weights into the model (the workspace's loader).
        fisher: the Fisher estimator (its model computes with what ``load`` put there).
        pruning_ladder: global sparsities, increasing (empty: no pruning moves).
        config: the ``fitcompress`` section.
    """

    def __init__(self, spaces: list[LayerSpace], load, fisher: FisherEstimator,
                 pruning_ladder: list[float], config) -> None:
        self.spaces, self.load, self.estimator = spaces, load, fisher
        self.cfg = config
        self.pladder = list(pruning_ladder) if config.optimize_pruning else []
        self.prunable = [n for n, s in enumerate(spaces) if s.prunable]
        if not self.prunable:
            self.pladder = []
        self.n_prunable = sum(spaces[n].numel for n in self.prunable)
        self.n_total = sum(s.numel for s in spaces)
        self.goal = float(config.compression_goal)
        self.lam = float(config.f_lambda)
        self.counter = itertools.count()
        self.result_counts = {"generated": 0, "duplicates": 0}

    # ------------------------------------------------------------------ node tensors
    def _bits(self, n: int, node: Node) -> int | None:
        r = node.widx[n]
        return None if r < 0 else self.spaces[n].ladder[r]

    def _theta(self, node: Node) -> list[torch.Tensor]:
        return [s.weight(self._bits(n, node), node.masks[n]) for n, s in enumerate(self.spaces)]

    def _size(self, n: int, theta: torch.Tensor, bits: int | None) -> torch.Tensor:
        return kept_bits(theta, self.spaces[n].bits(bits))

    def _fisher_at(self, theta: list[torch.Tensor]) -> list[torch.Tensor]:
        self.load(theta)
        return self.estimator()

    def _ratio(self, size_bits: float) -> float:
        return size_bits / (REFERENCE_BITS * self.n_total)

    # ------------------------------------------------------------------ moves
    def _prune(self, node: Node, theta, fisher) -> tuple[tuple, float]:
        """Masks for the next pruning rung from importance ``F * theta**2``."""
        target = self.pladder[node.pidx + 1]
        scores = []
        for n in self.prunable:
            score = fisher[n] * theta[n].square()
            if node.masks[n] is not None:  # masked weights stay masked (lowest score)
                score = torch.where(node.masks[n], score, torch.full_like(score, -1.0))
            scores.append(score.flatten())
        flat = torch.cat(scores)
        count = int(math.floor(target * self.n_prunable))
        keep = torch.ones_like(flat, dtype=torch.bool)
        if count > 0:
            keep[torch.topk(flat, count, largest=False, sorted=False).indices] = False
        masks = list(node.masks)
        offset = 0
        for n in self.prunable:
            size = self.spaces[n].numel
            masks[n] = keep[offset:offset + size].view_as(self.spaces[n].master)
            offset += size
        return tuple(masks), target

    def _neighbours(self, node: Node, theta, fisher) -> list[tuple[Node, list]]:
        """Unevaluated neighbours with their full weights (keys not seen before)."""
        out = []
        if self.cfg.optimize_quantization:
            for n, s in enumerate(self.spaces):
                if node.widx[n] + 1 >= len(s.ladder):
                    continue
                widx = node.widx[:n] + (node.widx[n] + 1,) + node.widx[n + 1:]
                child = Node(widx, node.pidx, node.masks,
                             moves=node.moves + (f"{s.name}:{s.ladder[widx[n]]}",))
                if self._is_new(child):
                    new_theta = list(theta)
                    new_theta[n] = s.weight(s.ladder[widx[n]], node.masks[n])
                    out.append((child, new_theta))
        if self.pladder and node.pidx + 1 < len(self.pladder):
            child = Node(node.widx, node.pidx + 1, node.masks)
            if self._is_new(child):
                masks, target = self._prune(node, theta, fisher)
                child.masks = masks
                child.moves = node.moves + (f"prune:{target:.4g}",)
                out.append((child, self._theta(child)))
        return out

    def _is_new(self, child: Node) -> bool:
        if child.key in self.seen:
            self.result_counts["duplicates"] += 1
            return False
        self.seen.add(child.key)
        self.result_counts["generated"] += 1
        return True

    # ------------------------------------------------------------------ costs
    def _evaluate(self, node: Node, theta, fisher, children) -> None:
        """Fill g, h, total and c of ``children`` (one host sync for all of them)."""
        rows = []
        for child, ctheta in children:
            step = sum((fisher[n] * (theta[n] - ctheta[n]).square()).sum()
                       for n in range(len(theta)) if ctheta[n] is not theta[n])
            f_child = fisher
            if not self.cfg.approximate:
                f_child = child.fisher = self._fisher_at(ctheta)
            sens = sum(sensitivity(t, f) for t, f in zip(ctheta, f_child))
            size = sum(self._size(n, t, self._bits(n, child)) for n, t in enumerate(ctheta))
            rows.append(torch.stack([torch.as_tensor(step, dtype=torch.float32),
                                     sens.float(), size.float()]))
        if not rows:
            return
        values = torch.stack(rows).tolist()
        for (child, _), (step, sens, size) in zip(children, values):
            child.c = self._ratio(size)
            child.g = node.g + math.sqrt(max(step, 0.0))
            child.h = abs(child.c - self.goal) * math.sqrt(max(sens, 0.0))
            child.total = child.g + self.lam * child.h

    # ------------------------------------------------------------------ search
    def run(self) -> SearchResult:
        start_time = time.perf_counter()
        L = len(self.spaces)
        root = Node((-1,) * L, -1, (None,) * L)
        root_theta = self._theta(root)
        root.c = self._ratio(float(sum(self._size(n, t, None)
                                       for n, t in enumerate(root_theta))))
        self.seen = {root.key}
        best = root
        open_heap = [(0.0, next(self.counter), root)]
        expanded: list[tuple] = []
        reached = False
        while open_heap:
            _, _, node = heapq.heappop(open_heap)
            if node.c <= self.goal:
                best, reached = node, True
                break
            if len(expanded) >= self.cfg.max_expansions:
                break
            if self.cfg.greedy_astar:
                open_heap.clear()
            expanded.append(node.key)
            theta = self._theta(node)
            if node.fisher is None:
                node.fisher = self._fisher_at(theta)
            children = self._neighbours(node, theta, node.fisher)
            self._evaluate(node, theta, node.fisher, children)
            if self.cfg.approximate:
                node.fisher = None  # children compute their own when expanded; free memory
            for child, _ in children:
                heapq.heappush(open_heap, (child.total, next(self.counter), child))
                if (max(child.c - self.goal, 0.0), child.total) < (
                        max(best.c - self.goal, 0.0), best.total):
                    best = child
        return self._result(best, reached, expanded, time.perf_counter() - start_time)

    def _result(self, node: Node, reached: bool, expanded, seconds: float) -> SearchResult:
        sparsity = [0.0 if m is None else 1.0 - float(m.float().mean()) for m in node.masks]
        masked = sum(sparsity[n] * self.spaces[n].numel for n in self.prunable)
        return SearchResult(
            layers=[s.name for s in self.spaces],
            bits=[self._bits(n, node) for n in range(len(self.spaces))],
            masks=list(node.masks), sparsity=sparsity,
            global_sparsity=masked / self.n_prunable if self.n_prunable else 0.0,
            compression=node.c, goal=self.goal, reached=reached, path_cost=node.g,
            moves=node.moves, nodes_expanded=len(expanded),
            nodes_generated=self.result_counts["generated"],
            duplicates=self.result_counts["duplicates"],
            fisher_evaluations=self.estimator.evaluations,
            fisher_batches=self.estimator.batches_used, expanded_keys=expanded,
            search_time_s=seconds,
        )
