"""The learner interface every meta-learner in :mod:`mlbook.meta` implements, and its rules.

:func:`~mlbook.meta.meta_train` and :func:`~mlbook.meta.evaluate` work with any object of
this shape, so ``MAML`` (and its variants), ``Reptile`` and ``ProtoNet`` can be swapped for
one another, for classification episodes (:class:`mlbook.data.Episode`) and regression
batches (:class:`mlbook.data.SinusoidBatch`) alike.

Scores. Per-task scores are the **accuracy** (fraction in [0, 1], higher is better) when the
targets are class ids, and the **mean squared error** (lower is better) when they are floats;
:func:`score_name` says which (``"acc"`` or ``"mse"``), and histories name their series after
it (``train_acc`` / ``val_acc`` or ``train_mse`` / ``val_mse``). Scores are returned as CPU
float tensors ``[T]``; means as Python floats.

Batch norm: one rule. MAML (Finn et al. 2017) normalises with the statistics of the batch
it sees, in the inner and the outer loop, at training and at test time; so do ``MAML`` and
``Reptile`` here, whatever the module's train/eval mode. A model whose batch norm tracks
running statistics is refused with a clear error (:func:`check_batch_norm`): build it with
``track_running_stats=False`` (``Conv4(..., track_running_stats=False)``). ``ProtoNet`` has no
inner loop and uses its encoder as an ordinary network: batch statistics in training, running
statistics in eval mode, as Snell et al.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from mlbook.meta._tasks import score_name

__all__ = ["MetaLearner", "check_batch_norm", "score_name"]


@runtime_checkable
class MetaLearner(Protocol):
    """What :func:`~mlbook.meta.meta_train` and :func:`~mlbook.meta.evaluate` need.

    ``MAML``, ``Reptile`` and ``ProtoNet`` implement it (all ``nn.Module``\\ s too).
    """

    def meta_parameters(self) -> list[torch.Tensor]:
        """What the outer optimizer trains."""
        ...

    def meta_loss(self, episode: Any) -> tuple[torch.Tensor, float]:
        """``(loss, mean score)`` over the episode's tasks; ``loss.backward()`` leaves the
        meta-gradient in the ``.grad`` of :meth:`meta_parameters`."""
        ...

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor,
              steps: int | None = None) -> Any:
        """What one task's support set teaches: adapted parameters (MAML, Reptile) or class
        prototypes (ProtoNet); ``steps`` overrides the inner steps where there are any."""
        ...

    def predict(self, adapted: Any, x: torch.Tensor) -> torch.Tensor:
        """Predictions ``[B, ...]`` (logits or regression outputs) for ``x [B, ...]``."""
        ...

    def task_scores(self, episode: Any, steps: int | None = None) -> torch.Tensor:
        """Per-task query score ``[T]`` after adaptation (see the module docstring)."""
        ...


def check_batch_norm(model: nn.Module, learner: str) -> None:
    """Refuse batch norm layers that keep running statistics (the rule above)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            raise ValueError(
                f"batch norm {name!r} tracks running statistics; {learner} normalises with the "
                "statistics of each batch, in the inner and outer loop and at test time (Finn "
                "et al. 2017). Build the model with track_running_stats=False, e.g. "
                "Conv4(..., track_running_stats=False)"
            )
