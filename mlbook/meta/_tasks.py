"""What every meta-learner needs: episode checks and per-task scores.

* :func:`check_episode` validates the four tensors of an episode batch and says what is wrong.
* :func:`task_score` is the score of one task's query predictions: accuracy for
  classification (integer targets), mean squared error for regression (float targets).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
import torch.nn.functional as F


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
    if not (sx.is_floating_point() and qx.is_floating_point()):
        raise ValueError(f"support_x and query_x must be floating point, got {sx.dtype} and "
                         f"{qx.dtype}; convert images with .float()")
    if sy.is_floating_point() != qy.is_floating_point():
        raise ValueError(f"support_y and query_y must both hold class ids (integers) or both "
                         f"regression targets (floats), got {sy.dtype} and {qy.dtype}")
    if not sy.is_floating_point():
        low = min(int(sy.min()), int(qy.min()))
        if low < 0 or int(qy.max()) > int(sy.max()):
            raise ValueError(
                "class ids must be 0..N-1 in every task, and every query class must appear in "
                f"the support set; got support ids {int(sy.min())}..{int(sy.max())} and query "
                f"ids {int(qy.min())}..{int(qy.max())}"
            )
    return num_tasks


def accuracy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Fraction of ``targets`` that ``logits [..., N]`` rank first, as a scalar tensor."""
    return (logits.argmax(dim=-1) == targets).float().mean()




def score_name(targets: torch.Tensor) -> str:
    """``"acc"`` for integer (class) targets, ``"mse"`` for float (regression) targets."""
    return "mse" if targets.is_floating_point() else "acc"


def task_score(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """One task's query score (a scalar tensor, no graph): accuracy in [0, 1] for class
    targets, mean squared error for regression targets (see :func:`score_name`)."""
    predictions = predictions.detach()
    if score_name(targets) == "acc":
        return accuracy(predictions, targets)
    return F.mse_loss(predictions, targets)
