"""How a learner runs its tasks, decided once when the learner is built.

A learner's algorithm is a loop over the tasks of an episode; *how* that loop is executed is
a :class:`TaskRunner`, chosen by :func:`make_runner` from the learner's ``fast``, ``threads``
and ``vectorize`` options and held by the learner:

* :class:`PlainRunner`: the module's own forward and a plain Python loop over tasks;
* :class:`ThreadedRunner`: a forward interpreted op by op (in the CPU layout when
  ``layout=True``) and the tasks split over Python threads, each task's meta-gradient taken
  in its thread (:func:`~mlbook.meta._fast.tasks.meta_loss_in_threads`);
* :class:`VmapRunner`: the module's forward and all tasks at once under ``torch.func.vmap``
  (MAML only, small nets without batch norm).

All three compute the same values; ``tests/test_meta_maml.py`` compares them to 1e-10 in
float64.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from mlbook.meta._fast.interpreter import Interpreter
from mlbook.meta._fast.tasks import (
    map_task_chunks,
    meta_loss_in_threads,
    resolve_threads,
    vmap_meta_loss,
)
from mlbook.meta.functional import functional_forward

TaskLoss = Callable[[int], tuple[torch.Tensor, torch.Tensor]]


class PlainRunner:
    """The readable path: the module's own forward, one task after another."""

    def __init__(self, model: nn.Module) -> None:
        self.forward_fn: Callable = functional_forward(model)

    def mean_over_tasks(self, task_loss: TaskLoss, num_tasks: int, learner: Any = None,
                        episode: Any = None) -> tuple[torch.Tensor, float]:
        """The mean of ``task_loss(t) = (loss, score)`` over ``t < num_tasks``."""
        losses, scores = zip(*(task_loss(t) for t in range(num_tasks)), strict=True)
        return torch.stack(losses).mean(), float(torch.stack(scores).mean())

    def map_task_chunks(self, chunk: Callable[[range], Any], num_tasks: int) -> list[Any]:
        """``[chunk(range(num_tasks))]``, in the calling thread."""
        return [chunk(range(num_tasks))]


class ThreadedRunner(PlainRunner):
    """An interpreted forward (thread-safe; the CPU layout when ``layout``) and task threads."""

    def __init__(self, model: nn.Module, threads: int | None, layout: bool = True) -> None:
        self.forward_fn = Interpreter(model, layout=layout)
        self.model, self.threads = model, threads

    def _threads(self, num_tasks: int) -> int:
        device = next(self.model.parameters()).device
        return resolve_threads(self.threads, num_tasks, device)

    def mean_over_tasks(self, task_loss: TaskLoss, num_tasks: int, learner: Any = None,
                        episode: Any = None) -> tuple[torch.Tensor, float]:
        """As :meth:`PlainRunner.mean_over_tasks`, each task's meta-gradient in its thread
        (with grad mode on; without it the plain loop)."""
        if not torch.is_grad_enabled():
            return super().mean_over_tasks(task_loss, num_tasks)
        return meta_loss_in_threads(task_loss, learner.meta_parameters(), num_tasks,
                                    self._threads(num_tasks))

    def map_task_chunks(self, chunk: Callable[[range], Any], num_tasks: int) -> list[Any]:
        """``chunk`` on contiguous chunks of the tasks, one Python thread per chunk; the
        results in chunk order."""
        return map_task_chunks(chunk, num_tasks, self._threads(num_tasks))


class VmapRunner(PlainRunner):
    """The module's forward, all tasks of a MAML meta-loss at once under ``torch.func.vmap``."""

    def mean_over_tasks(self, task_loss: TaskLoss, num_tasks: int, learner: Any = None,
                        episode: Any = None) -> tuple[torch.Tensor, float]:
        """The same mean, computed by ``vmap`` over the episode's tasks (``task_loss`` is not
        called: the vmapped task is :func:`~mlbook.meta._fast.tasks.vmap_meta_loss`'s)."""
        return vmap_meta_loss(learner, episode)


TaskRunner = PlainRunner | ThreadedRunner | VmapRunner


def make_runner(model: nn.Module, fast: bool | str, threads: int | None,
                vectorize: bool) -> TaskRunner:
    """The runner for a learner's (already validated) options: ``vectorize`` wins, then
    ``fast=True`` (threads and CPU layout), ``fast="threads"`` (threads, NCHW ops as
    written), ``fast=False`` (plain)."""
    if vectorize:
        return VmapRunner(model)
    if fast is True:
        return ThreadedRunner(model, threads, layout=True)
    if fast == "threads":
        return ThreadedRunner(model, threads, layout=False)
    return PlainRunner(model)
