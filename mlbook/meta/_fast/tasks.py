"""Tasks in parallel: Python threads over tasks, per-task meta-gradients, ``vmap`` over tasks.

* :func:`map_task_chunks` runs a function over the ``T`` tasks split into contiguous chunks,
  one Python thread per chunk, each thread with ``torch.set_num_threads(1)``. On a CPU the
  small per-task convolutions of few-shot learning scale poorly over intra-op threads, while
  autograd releases the GIL, so whole tasks in parallel run faster.
* :func:`meta_loss_in_threads` computes each task's meta-gradient as soon as its query loss is
  known (one task's graph alive per thread) and sums them; :class:`AttachGradients` then hands
  the sum to ``loss.backward()``, so a training loop keeps writing ``loss.backward();
  optimizer.step()``.
* :func:`vmap_meta_loss` computes MAML's meta-loss with ``torch.func.vmap`` over tasks: fast
  for small nets without batch norm (the sinusoid MLP).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from mlbook.meta._tasks import task_score


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


def meta_loss_in_threads(task_loss: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
                         inputs: list[torch.Tensor], num_tasks: int,
                         threads: int) -> tuple[torch.Tensor, float]:
    """The mean of ``task_loss(t)`` over tasks, as a tensor whose backward gives ``inputs``
    the meta-gradient, and the mean score; each task's gradient is taken in its thread.

    ``task_loss(t)`` returns ``(loss, score)`` for task ``t`` (scalar tensors).
    """
    device = inputs[0].device

    def chunk(tasks: range):
        grads = [torch.zeros_like(p) for p in inputs]
        loss_sum = torch.zeros((), dtype=inputs[0].dtype, device=device)
        score_sum = 0.0
        for t in tasks:
            loss, score = task_loss(t)
            task_grads = torch.autograd.grad(loss / num_tasks, inputs, allow_unused=True)
            for g, tg in zip(grads, task_grads, strict=True):
                if tg is not None:
                    g += tg
            loss_sum += loss.detach()
            score_sum += float(score)
        return grads, loss_sum, score_sum

    results = map_task_chunks(chunk, num_tasks, threads)
    grads, loss_sum, score_sum = results[0]
    for other_grads, other_loss, other_score in results[1:]:
        for g, og in zip(grads, other_grads, strict=True):
            g += og
        loss_sum = loss_sum + other_loss
        score_sum += other_score
    loss = AttachGradients.apply(loss_sum / num_tasks, grads, *inputs)
    return loss, score_sum / num_tasks


def vmap_meta_loss(learner: Any, episode: Any) -> tuple[torch.Tensor, float]:
    """A :class:`~mlbook.meta.MAML` meta-loss with all tasks at once: ``torch.func.vmap``
    over tasks of ``torch.func.grad`` inner steps (the same values as the task loop)."""
    lrs, names = learner.step_sizes(), learner.adapt_names
    forward, loss_fn = learner.forward_fn, learner.loss_fn

    def one_task(sx, sy, qx, qy):
        phi = learner.params()
        for _ in range(learner.inner_steps):
            def support_loss(adapted, phi=phi):
                return loss_fn(forward({**phi, **adapted}, sx), sy)

            grads = torch.func.grad(support_loss)({n: phi[n] for n in names})
            for n in names:
                g = grads[n].detach() if learner.first_order else grads[n]
                phi[n] = phi[n] - (lrs[n] if isinstance(lrs, Mapping) else lrs) * g
        out = forward(phi, qx)
        return loss_fn(out, qy), task_score(out, qy)

    losses, scores = torch.func.vmap(one_task)(episode.support_x, episode.support_y,
                                               episode.query_x, episode.query_y)
    return losses.mean(), float(scores.mean())
