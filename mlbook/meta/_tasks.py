"""Plumbing shared by the meta-learners: episode checks, task-parallel threads, a loss node.

* :func:`check_episode` validates the four tensors of an episode batch and says what is wrong.
* :func:`map_task_chunks` runs a function over the ``T`` tasks split into contiguous chunks,
  one Python thread per chunk, each thread with ``torch.set_num_threads(1)``. On a CPU the
  small per-task convolutions of few-shot learning scale poorly over intra-op threads, while
  autograd releases the GIL, so whole tasks in parallel run faster (on 2 cores, the
  "mlbook NCHW" row of ``benchmarks/results/maml_throughput.md``: 1.17x faster than the
  plain per-task loop, second order).
* :class:`AttachGradients` turns a loss *value* whose gradients were already computed (task
  by task, inside those threads) into a tensor whose ``backward()`` deposits exactly those
  gradients, so a training loop can keep writing ``loss.backward(); optimizer.step()``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch


class EpisodeLike(Protocol):
    """Anything with ``support_x, support_y, query_x, query_y`` (``mlbook.data.Episode``,
    ``mlbook.data.SinusoidBatch``), each with the tasks along dimension 0."""

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor


def check_episode(episode: Any) -> int:
    """Validate an episode batch and return its number of tasks ``T``.

    Expects ``support_x [T, S, *sample]``, ``support_y [T, S, *target]``, ``query_x
    [T, Q, *sample]``, ``query_y [T, Q, *target]``, as :func:`mlbook.data.sample_episodes`
    returns.

    Raises
    ------
    TypeError
        If a field is missing or not a tensor.
    ValueError
        If the shapes do not fit together.
    """
    fields = ("support_x", "support_y", "query_x", "query_y")
    tensors = []
    for name in fields:
        value = getattr(episode, name, None)
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"episode.{name} must be a tensor, got {type(value).__name__}; pass an "
                "mlbook.data.Episode (from sample_episodes / EpisodeSampler / fixed_episodes)"
            )
        tensors.append(value)
    sx, sy, qx, qy = tensors
    shapes = ", ".join(f"{n}={tuple(t.shape)}" for n, t in zip(fields, tensors, strict=True))
    if sx.ndim < 3 or qx.ndim < 3 or sy.ndim < 2 or qy.ndim < 2:
        raise ValueError(
            "episode tensors need a task dimension: support_x/query_x [T, examples, ...] and "
            f"support_y/query_y [T, examples]; got {shapes}. For a single task add one with "
            "unsqueeze(0)"
        )
    num_tasks = sx.shape[0]
    if not (sy.shape[0] == qx.shape[0] == qy.shape[0] == num_tasks) or num_tasks == 0:
        raise ValueError(
            f"all four episode tensors need the same number T >= 1 of tasks, got {shapes}"
        )
    if sy.shape[1] != sx.shape[1] or qy.shape[1] != qx.shape[1]:
        raise ValueError(
            f"inputs and targets disagree on the number of examples per task: {shapes}"
        )
    if sx.shape[2:] != qx.shape[2:]:
        raise ValueError(f"support and query examples must have the same shape, got {shapes}")
    if sx.shape[1] == 0 or qx.shape[1] == 0:
        raise ValueError(
            f"every task needs at least one support and one query example, got {shapes}"
        )
    return num_tasks


def resolve_threads(threads: int | None, num_tasks: int, device: torch.device,
                    thread_safe: bool = True) -> int:
    """How many task threads to use: ``threads`` or (``None``) the intra-op thread count on a
    CPU and 1 on an accelerator (one stream of kernels is what a GPU wants); always 1 when
    the forward is not ``thread_safe`` (see :class:`mlbook.meta.functional.FunctionalModel`).
    """
    if threads is None:
        threads = torch.get_num_threads() if device.type == "cpu" else 1
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    return max(1, min(threads, num_tasks)) if thread_safe else 1


def accuracy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Fraction of ``targets`` that ``logits [..., N]`` rank first, as a scalar tensor."""
    return (logits.argmax(dim=-1) == targets).float().mean()


def map_task_chunks(fn: Callable[[range], Any], num_tasks: int, threads: int) -> list[Any]:
    """Run ``fn(task_range)`` on ``threads`` contiguous chunks of ``range(num_tasks)``.

    With ``threads == 1`` this is one plain call in the current thread, with PyTorch's usual
    intra-op threads. Otherwise chunk 0 runs in the calling thread and the others in new
    threads, all with one intra-op thread each; the caller's thread count is restored after.
    ``fn`` must be thread-safe (no shared module state: use an interpreted
    :class:`mlbook.meta.functional.FunctionalModel`). The first exception raised in any
    thread is re-raised here.

    Returns
    -------
    list
        ``fn``'s results in chunk order.
    """
    if threads == 1:
        return [fn(range(num_tasks))]
    bounds = [num_tasks * i // threads for i in range(threads + 1)]
    chunks = [range(bounds[i], bounds[i + 1]) for i in range(threads)]
    results: list[Any] = [None] * threads
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            torch.set_num_threads(1)
            results[i] = fn(chunks[i])
        except BaseException as exc:  # handed to the caller below
            errors.append(exc)

    before = torch.get_num_threads()
    workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(1, threads)]
    for w in workers:
        w.start()
    try:
        work(0)
    finally:
        for w in workers:
            w.join()
        torch.set_num_threads(before)
    if errors:
        raise errors[0]
    return results


class AttachGradients(torch.autograd.Function):
    """``AttachGradients.apply(value, grads, *inputs)``: a copy of ``value`` whose backward
    gives ``inputs[i]`` the gradient ``grad_output * grads[i]``.

    Used when the gradients of a loss were computed eagerly (per task, in threads): the
    returned tensor behaves like the loss for ``backward()`` (first derivatives only).
    """

    @staticmethod
    def forward(ctx, value: torch.Tensor, grads: Sequence[torch.Tensor], *inputs: torch.Tensor):
        ctx.grads = list(grads)
        return value.detach().clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        return (None, None, *(grad_output * g for g in ctx.grads))
