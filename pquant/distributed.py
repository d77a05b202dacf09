"""Data-parallel training under ``torchrun``: one model, its batches split over N processes.

``torchrun --nproc_per_node=N -m pquant ...`` starts N copies of the command with ``WORLD_SIZE``,
``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set. :func:`start` joins them in
a process group (``gloo`` on CPU, ``nccl`` on CUDA with device ``cuda:LOCAL_RANK``) and
:func:`stop` leaves it. Everything else here is a no-op when the process is alone (no
``torchrun``, or ``--nproc_per_node=1``): the single-process path builds no group and pays
nothing.

How the processes stay one model:

* **Data.** :class:`ShardedLoader` wraps the ordinary training loader: every rank draws the same
  permutation (same seed) and the same *global* batches of ``training.batch_size``; rank ``r`` of
  ``W`` keeps the rows ``r, r + W, r + 2W, ...`` of each global batch. The union of the shards of
  a step is exactly the batch one process would train on, so a one-process run and a
  W-process run see the same global batches in the same order.
* **Gradients.** After every backward, :func:`average_gradients` sums all gradients over the
  ranks in one flat buffer and divides by ``W`` (explicit averaging, not
  ``torch.nn.parallel.DistributedDataParallel``: see :func:`average_gradients`). The per-rank
  task loss is the mean over the rank's shard, scaled by ``W * n_rank / n_global`` when a last
  batch splits unevenly, so the average is the gradient of the global-batch mean. Compression
  terms (pruning regularisers, HGQ's EBOPs and widths) depend only on weights and formats, which
  are equal on every rank: each rank adds them once and the average keeps them once.
* **Statistics from data.** Wanda's input norms, activation-pruning rates, dynamic data ranges
  and HGQ's wrap-mode integer bits call :func:`all_reduce_` (sum or max) so that every rank
  holds the same masks and formats. MDMM's constraint and the PDP, AutoSparse, CS and DST
  thresholds are functions of the weights alone (equal on every rank): nothing to reduce.
  Batch-norm layers normalise each shard with its own statistics (their running statistics
  are averaged after every step by :func:`average_norm_statistics`).
* **Evaluation** runs on the full validation/test sets on every rank (no collectives in eval):
  identical models give identical numbers.
* **Side effects.** Only rank 0 tracks (MLflow), writes the run directory and prints the summary.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

#: how long a rank waits for the others in one collective before failing (seconds)
TIMEOUT_S = float(os.environ.get("PQUANT_DIST_TIMEOUT_S", "600"))


@dataclass(frozen=True)
class World:
    """Where this process stands among the ``torchrun`` processes.

    Attributes:
        rank: global rank (0 .. size - 1).
        size: number of processes training the model (1: not distributed).
        local_rank: rank on this node (the CUDA device index).
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def rank0(self) -> bool:
        return self.rank == 0


def env_world() -> World:
    """The world ``torchrun`` announces in the environment (size 1 without it)."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        return World()
    return World(rank, size, local) if size > 1 else World()


def world() -> World:
    """The world of the running process group (size 1 when none is up)."""
    if not _active():
        return World()
    return World(dist.get_rank(), dist.get_world_size(), env_world().local_rank)


def is_rank0() -> bool:
    """True on rank 0, and in every process that is not part of a group."""
    return not _active() or dist.get_rank() == 0


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


_OPS = {"sum": "SUM", "max": "MAX", "min": "MIN"}


def all_reduce_(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduce ``tensor`` in place over all ranks (``sum``, ``max``, ``min`` or ``mean``).

    No-op (returns ``tensor`` unchanged) outside a process group. Every rank must call it at
    the same point with a tensor of the same shape and dtype.
    """
    if not _active():
        return tensor
    if op == "mean":
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.div_(dist.get_world_size())
    dist.all_reduce(tensor, op=getattr(dist.ReduceOp, _OPS[op]))
    return tensor


# ----------------------------------------------------------------------------- group life
def device_for(device: torch.device, w: World) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` for a CUDA run, else ``device``."""
    if w.distributed and device.type == "cuda":
        return torch.device("cuda", w.local_rank)
    return device


def start(device: torch.device) -> torch.device:
    """Join the ``torchrun`` process group (``nccl`` for CUDA, else ``gloo``) when the
    environment announces more than one process; returns this rank's device. No-op otherwise."""
    w = env_world()
    if not w.distributed or _active():
        return device_for(device, w)
    device = device_for(device, w)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=TIMEOUT_S))
    log.info("torchrun: rank %d of %d (%s, %s)", w.rank, w.size, backend, device)
    return device


def stop() -> None:
    """Leave the process group (idempotent; also on the failure and KILLED paths)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ----------------------------------------------------------------------------- model state
def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1).to(torch.float64) for t in tensors]) if tensors \
        else torch.zeros(0, dtype=torch.float64)


def broadcast_state(model: torch.nn.Module) -> None:
    """Copy rank 0's parameters and floating/integer buffers to every rank (once, at start)."""
    if not _active():
        return
    for t in list(model.parameters()) + list(model.buffers()):
        with torch.no_grad():
            dist.broadcast(t.data, src=0)


def average_gradients(params: Iterable[torch.nn.Parameter], stop_flag: bool = False) -> bool:
    """Average the gradients of ``params`` over the ranks, in place; returns whether any rank
    asked to stop (SIGINT/SIGTERM), so that all ranks stop after the same step.

    One flat all-reduce per step (plus one element carrying the stop flag). Parameters without
    a gradient are left without one (the optimizer skips them, as in one process); which
    parameters have one depends on the model and the stage, never on the data, so the flat
    buffer has the same layout on every rank.

    Why not ``DistributedDataParallel``: its reducer registers each parameter once, at wrap
    time, and expects every parameter to get its gradient from the wrapped forward. Here some
    parameters take part only in the compression loss computed after the forward (MDMM's
    ``use_grad`` multiplier, the widths of HGQ quantizers that did not run), others only in some
    stages (pruning thresholds after pretraining), and FITCompress/finalisation swap modules;
    DDP then fails ("Expected to have finished reduction in the prior iteration", or "marked
    ready twice" with ``find_unused_parameters``). Averaging after ``backward`` is the same
    arithmetic as DDP's bucketed all-reduce, without those constraints.
    """
    if not _active():
        return stop_flag
    params = [p for p in params if p.grad is not None]
    like = params[0].grad if params else torch.zeros(0)
    flag = torch.full((1,), float(stop_flag), dtype=like.dtype, device=like.device)
    flat = torch.cat([p.grad.reshape(-1) for p in params] + [flag])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    stop_any = bool(flat[-1] > 0)
    flat = flat[:-1].div_(dist.get_world_size())
    offset = 0
    for p in params:
        n = p.grad.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n
    return stop_any


def average_norm_statistics(model: torch.nn.Module) -> None:
    """Average the running mean/variance of batch-norm layers over the ranks (each rank
    normalised its own shard; without this their running statistics would drift apart)."""
    if not _active():
        return
    stats = []
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._NormBase) and m.running_mean is not None:
            stats += [m.running_mean, m.running_var]
    if not stats:
        return
    flat = _flat(stats)
    all_reduce_(flat, "mean")
    offset = 0
    with torch.no_grad():
        for t in stats:
            t.copy_(flat[offset:offset + t.numel()].view_as(t).to(t.dtype))
            offset += t.numel()


def has_batch_norm(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._NormBase) for m in model.modules())


def divergence(model: torch.nn.Module) -> float:
    """Largest difference between this rank's state (parameters and buffers) and rank 0's
    (0.0 when alone): a check that the ranks still hold one model."""
    if not _active():
        return 0.0
    tensors = [t.detach() for t in list(model.parameters()) + list(model.buffers())
               if t.dtype.is_floating_point or t.dtype in (torch.bool, torch.long, torch.int)]
    mine = _flat(tensors)
    ref = mine.clone()
    dist.broadcast(ref, src=0)
    diff = (mine - ref).abs().max() if mine.numel() else torch.zeros((), dtype=torch.float64)
    all_reduce_(diff, "max")
    return float(diff)


# ----------------------------------------------------------------------------- data
class ShardedLoader:
    """This rank's share of every global batch of ``loader`` (rows ``rank::size``).

    Args:
        loader: yields the global ``(x, y)`` batches, the same on every rank (same seed).
        w: the world.

    Attributes:
        global_batch: size of the global batch the last yielded shard came from.
    """

    def __init__(self, loader, w: World) -> None:
        self.loader, self.world = loader, w
        self.global_batch = 0

    @property
    def generator(self):
        """The wrapped loader's permutation generator (checkpointed for resuming)."""
        return getattr(self.loader, "generator", None)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        r, size = self.world.rank, self.world.size
        for x, y in self.loader:
            self.global_batch = len(y)
            if len(y) < size:  # (every rank sees the same global batch: all stop alike)
                raise RuntimeError(f"a global batch of {len(y)} sample(s) cannot be split over "
                                   f"{size} torchrun processes; change training.batch_size")
            yield x[r::size], y[r::size]


def check_batches(num_train: int, batch_size: int, w: World) -> str | None:
    """Why the global batches cannot be split over ``w`` (None when they can)."""
    if not w.distributed:
        return None
    if batch_size % w.size:
        return (f"training.batch_size must be divisible by the number of torchrun processes "
                f"({w.size}) -- each takes batch_size / {w.size} samples of every global batch; "
                f"got {batch_size}")
    last = num_train % batch_size
    if 0 < last < w.size:
        return (f"training.batch_size: the last global batch of an epoch has {last} sample(s) "
                f"({num_train} training samples, batch_size {batch_size}), fewer than the "
                f"{w.size} torchrun processes; choose a batch_size that leaves 0 or at least "
                f"{w.size} samples for the last batch")
    return None
