"""Meta-training on several processes or machines with ``torch.distributed`` (``torchrun``).

:func:`mlbook.meta.meta_train` runs unchanged under ``torchrun --nproc_per_node=N script.py``
(and with ``--nnodes``/``--rdzv-endpoint`` across machines): it calls :func:`join`, which
joins the process group that ``torchrun`` describes in the environment (gloo for a CPU
learner, NCCL for a CUDA one), and then, at every step:

1. **Each rank draws its own share of the meta-batch.** Every rank runs the same sampler with
   the same seed, so all ranks see the same stream of meta-batches of ``T`` tasks;
   :class:`TaskShard` keeps tasks ``[r T / W, (r + 1) T / W)`` of each batch for rank ``r``
   of ``W``. The shares are disjoint, reproducible, and together they are exactly the tasks a
   single process would train on, whatever ``W`` is; so a checkpoint (which stores the
   sampler's generator) resumes on any number of processes. Drawing indices for all ``T``
   tasks and gathering their images costs little next to one task's meta-gradient.
2. **The meta-gradients are averaged** by one ``torch.distributed.all_reduce`` after
   ``loss.backward()`` (:meth:`World.average`), before ``optimizer.step()``, over one flat
   buffer holding the gradients of the optimizer's parameters, the learner's floating-point
   buffers (batch-norm running statistics, averaged so that every rank keeps the same ones),
   and the step's loss, accuracy and time (so every rank logs and stops alike).

Why the average is the one-process meta-gradient: every learner's meta-loss is a mean over
equally weighted tasks (MAML and its family, Reptile's ``theta - mean phi``), or, for
ProtoNets, a mean over the queries of all tasks, every task having the same number. With
``T / W`` tasks per rank, the mean of the ``W`` rank means is the mean over all ``T``
tasks, and so is its gradient. MAML and Reptile adapt each task by its own forward calls, so
batch norm with batch statistics keeps tasks independent and the result is the one-process
result up to rounding (the tests check 1e-10 in float64). **One exception:** ProtoNet embeds
all images of its meta-batch in one encoder batch, so an encoder with batch norm in training
mode normalises over the rank's share instead of the whole meta-batch (as with DDP without
``SyncBatchNorm``); without batch norm it is exact too.

Why not ``DistributedDataParallel``: DDP all-reduces gradients from hooks that fire as
``backward()`` accumulates them into ``.grad``, and it expects the model to be called through
the DDP wrapper's ``forward``. mlbook's learners call the network as a pure function of a
parameter dict (:mod:`mlbook.meta.functional`), MAML's inner loop differentiates it with
``torch.autograd.grad(create_graph=True)`` (which DDP does not support: it never fills
``.grad``), and the fast MAML path and Reptile compute each task's gradient eagerly in task
threads and hand the sum to ``backward()`` through
``AttachGradients`` (:mod:`mlbook.meta._fast.tasks`). So DDP would either miss gradients or average
them at the wrong moment; and because that ``backward()`` only copies finished gradients,
there is no backward computation for DDP's bucketed all-reduce to overlap with anyway. One
all-reduce after ``backward()`` is both correct and as fast.

Operations: only rank 0 writes checkpoints and shows progress bars (:attr:`World.is_writer`);
every rank validates on all validation episodes (the same parameters give the same scores, so
every rank returns the same history). Before any training, :func:`join` checks that the
world size divides the meta-batch and that every rank has the same parameters, optimizer,
sampler state and settings (an ``all_gather`` of fingerprints), and says what differs. The
process group gets a timeout (``timeout_s`` or ``MLBOOK_DIST_TIMEOUT_S``, default 600 s): with
gloo, a collective that fails because another rank crashed or hangs raises
:class:`RankFailureError` instead of waiting forever; with NCCL, PyTorch's watchdog ends the
process after the same timeout with its own message.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from mlbook.meta._tasks import check_episode

DEFAULT_TIMEOUT_S = 600.0
_timeout_s: float | None = None  # the timeout of a process group that init() started


class RankFailureError(RuntimeError):
    """A collective failed: another rank crashed, was killed, or did not answer in time."""


def launched_by_torchrun() -> bool:
    """Whether the environment describes a process group (``torchrun`` sets ``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_distributed() -> bool:
    """Whether this process belongs to an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Whether this is rank 0, the one that writes files and shows progress."""
    return rank() == 0


def _resolve_timeout(timeout_s: float | None) -> float:
    value: Any = timeout_s
    if value is None:
        value = os.environ.get("MLBOOK_DIST_TIMEOUT_S", DEFAULT_TIMEOUT_S)
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(
            f"the process-group timeout must be a positive number of seconds, got {value!r} "
            "(argument timeout_s or environment variable MLBOOK_DIST_TIMEOUT_S)"
        )
    return seconds


def init(device: torch.device | str = "cpu", timeout_s: float | None = None,
         backend: str | None = None, init_method: str = "env://",
         rank: int | None = None, world_size: int | None = None) -> bool:
    """Join a process group, if one is described and not yet joined.

    Parameters
    ----------
    device
        Where the learner lives. A CUDA device selects NCCL and becomes this process's
        current device; otherwise gloo.
    timeout_s
        How long a collective may wait for the other ranks before failing (default
        ``MLBOOK_DIST_TIMEOUT_S`` or 600 s). It bounds how long a rank waits for a crashed or
        stuck peer, so it must exceed the longest pause between two steps (validation,
        checkpointing).
    backend
        ``"gloo"`` or ``"nccl"`` to override the choice above.
    init_method, rank, world_size
        As in :func:`torch.distributed.init_process_group`; the default ``env://`` reads what
        ``torchrun`` sets. With another ``init_method`` (``file://...``, ``tcp://...``) give
        ``rank`` and ``world_size``.

    Returns
    -------
    bool
        Whether this process is now in a process group (``False``: a single process).
    """
    global _timeout_s
    if is_distributed():
        return True
    if init_method == "env://" and not launched_by_torchrun():
        return False
    if not dist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed; install a standard one")
    seconds = _resolve_timeout(timeout_s)
    device = torch.device(device)
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=init_method, rank=-1 if rank is None else rank,
                            world_size=-1 if world_size is None else world_size,
                            timeout=datetime.timedelta(seconds=seconds))
    _timeout_s = seconds
    return True


def _slice_tasks(batch: Any, start: int, stop: int) -> Any:
    """Tasks ``start..stop-1`` of an episode batch (a NamedTuple of tensors, tasks first)."""
    return type(batch)(*(t[start:stop] for t in batch))


class TaskShard:
    """This rank's share of every meta-batch of ``sampler``: tasks ``[r T/W, (r+1) T/W)``.

    ``generator`` is the wrapped sampler's, so checkpoints store (and restore) the stream
    that all ranks share.
    """

    def __init__(self, sampler: Any, rank: int, world_size: int) -> None:
        self.sampler, self.rank, self.world_size = sampler, rank, world_size

    @property
    def generator(self) -> Any:
        return getattr(self.sampler, "generator", None)

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        batch = next(self.sampler)
        num_tasks = check_episode(batch)
        _check_divisible(num_tasks, self.world_size)
        share = num_tasks // self.world_size
        return _slice_tasks(batch, self.rank * share, (self.rank + 1) * share)


def _check_divisible(num_tasks: int, size: int) -> None:
    if num_tasks % size:
        raise ValueError(
            f"the meta-batch of {num_tasks} tasks cannot be split evenly over {size} processes; "
            f"every rank needs the same number of tasks for the average of the rank gradients "
            f"to be the meta-gradient. Use a meta-batch (num_tasks) that is a multiple of "
            f"{size}, or launch a number of processes that divides {num_tasks}"
        )


def _describe(value: Any) -> Any:
    """A JSON-able description of ``value`` that is the same in two processes iff the values
    are (tensors by their bytes; no memory addresses)."""
    if isinstance(value, torch.Generator):
        value = value.get_state()
    if isinstance(value, torch.Tensor):
        data = value.detach().cpu().contiguous()
        raw = data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b""
        digest = hashlib.sha256(raw).hexdigest()
        return ["tensor", str(data.dtype), list(data.shape), digest]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return repr(value)  # json would turn nan into an invalid token
    if isinstance(value, (list, tuple)):
        return [_describe(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _describe(v) for k, v in value.items()}
    if isinstance(value, torch.device):
        return str(value)
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '')}.{value.__qualname__}"
    return type(value).__qualname__


def _public(obj: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """An object's public attributes (nn.Module internals and ``skip`` left out)."""
    return {k: v for k, v in getattr(obj, "__dict__", {}).items()
            if not k.startswith("_") and k not in skip and not isinstance(v, nn.Module)}


def fingerprint(learner: nn.Module, sampler: Any, optimizer: torch.optim.Optimizer,
                **settings: Any) -> dict[str, str]:
    """Short digests of what every rank must agree on before training.

    Keys: ``parameters`` (the learner's state), ``learner`` (its structure and settings;
    ``threads`` may differ, it does not change the mathematics), ``optimizer`` (type,
    hyper-parameters, state), ``sampler`` (type, settings, data, generator state) and
    ``settings`` (the keyword arguments, e.g. ``steps`` and the resumed ``step``).
    """
    parts = {
        "parameters": learner.state_dict(),
        "learner": [repr(learner), _public(learner, skip=("training", "threads"))],
        "optimizer": [type(optimizer).__qualname__, optimizer.state_dict()],
        "sampler": [type(sampler).__qualname__, _public(sampler)],
        "settings": settings,
    }
    return {name: hashlib.sha256(json.dumps(_describe(part), sort_keys=True).encode())
            .hexdigest()[:16] for name, part in parts.items()}


class World:
    """The processes that train one learner together (one process: a no-op twin).

    Made by :func:`join`; :func:`mlbook.meta.meta_train` calls :meth:`shard`,
    :attr:`is_writer` and :meth:`average`.
    """

    def __init__(self, rank: int, size: int, optimizer: torch.optim.Optimizer,
                 learner: nn.Module, step: int = 0) -> None:
        self.rank, self.size = rank, size
        params = [p for group in optimizer.param_groups for p in group["params"]]
        self.params = list({id(p): p for p in params}.values())  # each tensor once
        self.buffers = [b for b in learner.buffers() if b.is_floating_point()]
        self.step = step  # the training step, for error messages

    @property
    def is_writer(self) -> bool:
        """Whether this process writes checkpoints and shows progress (rank 0)."""
        return self.rank == 0

    def shard(self, sampler: Any) -> Any:
        """``sampler`` itself for one process, else this rank's :class:`TaskShard` of it."""
        return sampler if self.size == 1 else TaskShard(sampler, self.rank, self.size)

    def average(self, loss: torch.Tensor, accuracy: float,
                seconds: float) -> tuple[float, float, float]:
        """Average the meta-gradients (in ``.grad``), floating-point buffers, and the step's
        loss, accuracy and seconds over the ranks, in one all-reduce.

        Call it after ``loss.backward()`` and before ``optimizer.step()``. Returns the
        averaged ``(loss, accuracy, seconds)`` as floats: the same on every rank.
        """
        self.step += 1
        if self.size == 1:
            return float(loss.item()), float(accuracy), float(seconds)
        tensors = self.params + self.buffers
        dtype = tensors[0].dtype
        for t in tensors[1:]:
            dtype = torch.promote_types(dtype, t.dtype)
        device = tensors[0].device
        has_grad = [p.grad is not None for p in self.params]
        pieces = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                  for p in self.params]
        pieces += [b.reshape(-1) for b in self.buffers]
        scalars = [float(g) for g in has_grad] + [float(loss.item()), float(accuracy), seconds]
        pieces.append(torch.tensor(scalars, dtype=torch.float64))
        flat = torch.cat([t.to(device=device, dtype=dtype) for t in pieces])
        self._all_reduce(flat, f"the all-reduce of the meta-gradient at step {self.step}")
        flat /= self.size
        offset = 0
        for p, present in zip(self.params, has_grad, strict=True):
            if present:
                p.grad.copy_(flat[offset:offset + p.numel()].view_as(p))
            offset += p.numel()
        for b in self.buffers:
            b.copy_(flat[offset:offset + b.numel()].view_as(b))
            offset += b.numel()
        agreed = flat[offset:offset + len(has_grad)].cpu()
        if not bool(((agreed == 0) | (agreed == 1)).all()):
            raise RuntimeError(
                "the ranks disagree on which parameters received a meta-gradient; every rank "
                "must run the same learner on the same kind of tasks"
            )
        loss_mean, acc_mean, seconds_mean = flat[offset + len(has_grad):].tolist()
        return loss_mean, acc_mean, seconds_mean

    def _all_reduce(self, tensor: torch.Tensor, what: str) -> None:
        try:
            dist.all_reduce(tensor)
        except RuntimeError as exc:
            raise _rank_failure(what, exc) from exc


def _rank_failure(what: str, exc: BaseException) -> RankFailureError:
    limit = f"{_timeout_s:g} s" if _timeout_s is not None else "its timeout"
    return RankFailureError(
        f"rank {rank()} of {world_size()}: {what} failed, so this rank stops too. Another "
        "rank probably crashed (its own error is in its output), was killed, or is stuck; "
        f"the process group waits at most {limit} for it (timeout_s or "
        f"MLBOOK_DIST_TIMEOUT_S). Underlying error: {exc}"
    )


def _check_agreement(prints: list[dict[str, str]]) -> None:
    differ = {key: [r for r, p in enumerate(prints) if p[key] != prints[0][key]]
              for key in prints[0]}
    differ = {key: ranks for key, ranks in differ.items() if ranks}
    if differ:
        listed = "; ".join(f"{key} (ranks {ranks} differ from rank 0)"
                           for key, ranks in differ.items())
        raise ValueError(
            f"the {len(prints)} processes disagree before training on: {listed}. Every rank "
            "must run the same script with the same seeds and settings: seed every process "
            "alike (mlbook.seed_everything(seed)) before building the model, give every "
            "rank's sampler the same seed (meta_train splits each meta-batch across ranks "
            "itself), and put a checkpoint to resume from where every node can read it"
        )


def join(learner: nn.Module, sampler: Any, optimizer: torch.optim.Optimizer,
         timeout_s: float | None = None, **settings: Any) -> World:
    """The :class:`World` for a training run, after joining and checking the process group.

    Without ``torchrun`` (and no process group) this is a one-process world that does
    nothing. Otherwise the process group is joined if needed (:func:`init`), and on every
    rank, before any training:

    * the world size must divide ``sampler.num_tasks`` (when the sampler says it; otherwise
      each meta-batch is checked as it is drawn);
    * the :func:`fingerprint` of the learner, sampler, optimizer and ``settings`` must be the
      same on all ranks (an ``all_gather``), else every rank raises the same
      ``ValueError`` naming what differs.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    device = params[0].device if params else torch.device("cpu")
    if not init(device, timeout_s):
        return World(0, 1, optimizer, learner, settings.get("step", 0))
    me, size = dist.get_rank(), dist.get_world_size()
    num_tasks = getattr(sampler, "num_tasks", None)
    if isinstance(num_tasks, int):
        _check_divisible(num_tasks, size)
    mine = fingerprint(learner, sampler, optimizer, **settings)
    prints: list[Any] = [None] * size
    try:
        dist.all_gather_object(prints, mine)
    except RuntimeError as exc:
        raise _rank_failure("comparing the ranks' settings before training", exc) from exc
    _check_agreement(prints)
    return World(me, size, optimizer, learner, settings.get("step", 0))
