"""Multi-task learning: one shared trunk, one head per task (Caruana 1997).

Every training step draws a batch for each task, sums the weighted task losses and takes one
optimizer step, so the trunk's update is the sum of the tasks' gradients on it. Whether the
tasks help each other shows in those gradients: :func:`task_gradients` returns each task's
gradient on the shared parameters and :func:`gradient_cosine` their cosine. Positive: the
tasks push the trunk the same way; negative: they *conflict* and the sum cancels part of each
(Yu et al. 2020). :func:`train_multitask` logs that cosine during training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mlbook.loops import History, progress


class MultiTaskNet(nn.Module):
    """A shared ``trunk`` and one head per task: ``forward(x)`` returns ``{task: logits}``.

    Parameters
    ----------
    trunk
        ``[B, ...] -> [B, D]``, shared by every task.
    heads
        Task name -> ``[B, D] -> [B, classes of that task]``.
    """

    def __init__(self, trunk: nn.Module, heads: Mapping[str, nn.Module]) -> None:
        super().__init__()
        if not heads:
            raise ValueError("heads must name at least one task")
        self.trunk = trunk
        self.heads = nn.ModuleDict(dict(heads))

    @property
    def tasks(self) -> list[str]:
        return list(self.heads)

    def forward(self, x: torch.Tensor, task: str | None = None):
        """All tasks' logits as a dict, or one task's logits when ``task`` is given."""
        shared = self.trunk(x)
        if task is not None:
            if task not in self.heads:
                raise KeyError(f"unknown task {task!r}; tasks: {self.tasks}")
            return self.heads[task](shared)
        return {name: head(shared) for name, head in self.heads.items()}

    def shared_parameters(self) -> list[nn.Parameter]:
        """The trunk's trainable parameters, on which task gradients can conflict."""
        return [p for p in self.trunk.parameters() if p.requires_grad]


Batches = Mapping[str, tuple[torch.Tensor, torch.Tensor]]


def task_losses(model: MultiTaskNet, batches: Batches) -> dict[str, torch.Tensor]:
    """Cross-entropy of each task on its own batch ``{task: (x, y)}``."""
    unknown = set(batches) - set(model.tasks)
    if unknown:
        raise KeyError(f"batches for unknown tasks {sorted(unknown)}; tasks: {model.tasks}")
    return {task: F.cross_entropy(model(x, task), y) for task, (x, y) in batches.items()}


def task_gradients(losses: Mapping[str, torch.Tensor],
                   shared: Sequence[nn.Parameter]) -> dict[str, torch.Tensor]:
    """Each task's gradient on the shared parameters, flattened into one vector per task.

    The graph is kept (``retain_graph=True``) so the losses can still be backpropagated for
    the training step afterwards.
    """
    if not shared:
        raise ValueError("no shared parameters: the trunk has nothing trainable")
    grads = {}
    for task, loss in losses.items():
        g = torch.autograd.grad(loss, list(shared), retain_graph=True, allow_unused=True)
        grads[task] = torch.cat([
            (gi if gi is not None else torch.zeros_like(p)).flatten()
            for gi, p in zip(g, shared, strict=True)
        ])
    return grads


def gradient_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine of the angle between two gradient vectors, in [-1, 1] (0 if either is zero)."""
    if a.shape != b.shape:
        raise ValueError(f"gradients must have the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    return float(F.cosine_similarity(a.flatten(), b.flatten(), dim=0, eps=1e-12))


def train_multitask(model: MultiTaskNet, data: Batches,
                    optimizer: torch.optim.Optimizer, steps: int, batch_size: int = 32,
                    weights: Mapping[str, float] | None = None, log_every: int = 10,
                    seed: int = 0, desc: str = "multi-task") -> History:
    """Train all tasks jointly: each step one batch per task and the weighted sum of losses.

    Parameters
    ----------
    data
        Task name -> ``(x [M, ...], y [M])``; the tasks may have different examples and sizes.
        A single task trains an ordinary network with the same loop (the single-task baseline).
    weights
        Task name -> weight of its loss (default 1 for each).

    Returns
    -------
    History
        ``step``, ``loss_<task>`` for each task and, with two or more tasks, ``cosine``: the
        cosine of the first two tasks' gradients on the trunk, all averaged over ``log_every``
        steps.
    """
    if not data:
        raise ValueError("data must hold at least one task")
    if steps < 1 or batch_size < 1 or log_every < 1:
        raise ValueError(f"steps, batch_size and log_every must be >= 1, got {steps}, "
                         f"{batch_size}, {log_every}")
    unknown = set(weights or {}) - set(data)
    if unknown:
        raise KeyError(f"weights for tasks without data {sorted(unknown)}; tasks: {list(data)}")
    weights = dict.fromkeys(data, 1.0) | dict(weights or {})
    for task, (x, y) in data.items():
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"task {task!r}: x has {x.shape[0]} examples but y has {y.shape[0]}")
        if batch_size > x.shape[0]:
            raise ValueError(f"task {task!r} has {x.shape[0]} examples, fewer than batch_size "
                             f"{batch_size}")
    generator = torch.Generator().manual_seed(seed)
    tasks = list(data)
    history = History()
    sums: dict[str, float] = {}
    model.train()
    for step in progress(range(steps), desc=desc):
        batches = {}
        for task, (x, y) in data.items():
            idx = torch.randint(x.shape[0], (batch_size,), generator=generator)
            batches[task] = (x[idx], y[idx])
        losses = task_losses(model, batches)
        values = {f"loss_{t}": loss.item() for t, loss in losses.items()}
        if len(tasks) >= 2:
            grads = task_gradients({t: losses[t] for t in tasks[:2]}, model.shared_parameters())
            values["cosine"] = gradient_cosine(grads[tasks[0]], grads[tasks[1]])
        total = sum(weights[t] * losses[t] for t in tasks)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        for name, value in values.items():
            sums[name] = sums.get(name, 0.0) + value
        if (step + 1) % log_every == 0 or step + 1 == steps:
            count = (step % log_every) + 1
            history.log(step=step + 1, **{k: v / count for k, v in sums.items()})
            sums = {}
    return history
