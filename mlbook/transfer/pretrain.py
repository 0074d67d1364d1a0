"""Supervised training for a fixed number of steps, with a progress bar, history and resume.

:func:`fit` trains any classifier with cross-entropy (or any ``loss_fn``). It is used to
pretrain backbones on the source task, to train from-scratch baselines with the same
budget and to fine-tune. With ``checkpoint=`` it saves model, optimizer, history and step
atomically every ``checkpoint_every`` steps and at the end, and a later call with the same
path resumes from the saved step (loaded with ``torch.load(weights_only=True)``).

Batches from tensors are drawn deterministically: epoch ``e`` visits the examples in the
order ``torch.randperm(n, generator=Generator().manual_seed(seed + e))``, so an interrupted
and resumed run sees exactly the batches of an uninterrupted one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mlbook.checkpoint import load_checkpoint, save_checkpoint
from mlbook.loops import History, progress

Batch = tuple[torch.Tensor, torch.Tensor]


def tensor_batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int = 0, start_step: int = 0
) -> Iterable[Batch]:
    """Endless shuffled mini-batches of ``(x, y)``, starting at step ``start_step``.

    Each epoch is a fresh permutation seeded by ``seed + epoch``; the last incomplete batch
    of an epoch is dropped so that every step sees ``batch_size`` examples.
    """
    n = x.shape[0]
    if n != y.shape[0]:
        raise ValueError(f"x has {n} examples but y has {y.shape[0]}")
    if not 1 <= batch_size <= n:
        raise ValueError(
            f"batch_size must be in [1, {n}] (the number of examples), got {batch_size}"
        )
    per_epoch = n // batch_size
    epoch, offset = divmod(start_step, per_epoch)
    while True:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
        for b in range(offset, per_epoch):
            idx = order[b * batch_size : (b + 1) * batch_size]
            yield x[idx], y[idx]
        epoch, offset = epoch + 1, 0


def _loader_batches(loader: Iterable[Batch]) -> Iterable[Batch]:
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("the data loader yielded no batches")


def fit(
    model: nn.Module,
    data: Iterable[Batch] | Batch,
    optimizer: torch.optim.Optimizer,
    steps: int | None = None,
    epochs: int | None = None,
    batch_size: int = 64,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 200,
    log_every: int = 10,
    seed: int = 0,
    device: torch.device | str | None = None,
    desc: str = "train",
) -> History:
    """Train ``model`` for ``steps`` optimizer steps (or ``epochs`` passes) and return its history.

    Parameters
    ----------
    model
        Maps ``[B, ...]`` inputs to ``[B, num_classes]`` logits. Left in train mode.
    data
        A pair of tensors ``(x [M, ...], y [M])`` (batched by :func:`tensor_batches`) or any
        iterable of ``(x, y)`` batches such as a ``DataLoader`` (re-iterated as needed).
    optimizer
        Built on ``model``'s parameters (e.g. from
        :func:`~mlbook.transfer.layerwise_param_groups`).
    steps, epochs
        The budget: exactly one of them. ``epochs`` needs tensors (``M // batch_size`` steps
        per epoch) or a loader with a length.
    loss_fn
        ``loss_fn(logits, y)``; default cross-entropy.
    scheduler
        Stepped after every optimizer step; saved and restored with the checkpoint.
    transform
        Applied to each input batch on the device (data augmentation).
    checkpoint
        Path of the checkpoint: when it exists, training resumes from it; it is written every
        ``checkpoint_every`` steps and at the end.
    log_every
        Steps between two entries of the history (``step``, ``loss``, ``accuracy`` averaged
        over those steps).
    seed
        Seeds the batch order (tensors only).
    device
        Default: the device of the model's first parameter.

    Returns
    -------
    History
        Series ``step``, ``loss`` (mean cross-entropy, nats) and ``accuracy`` (in [0, 1],
        on the training batches).
    """
    if (steps is None) == (epochs is None):
        raise ValueError("give exactly one of steps= or epochs=")
    is_tensors = isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor)
    if epochs is not None:
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        per_epoch = data[0].shape[0] // batch_size if is_tensors else len(data)  # type: ignore[arg-type]
        steps = epochs * per_epoch
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if log_every < 1 or checkpoint_every < 1:
        raise ValueError("log_every and checkpoint_every must be >= 1")
    loss_fn = loss_fn or F.cross_entropy
    if device is None:
        device = next(model.parameters()).device

    history, step = History(), 0
    path = Path(checkpoint) if checkpoint is not None else None
    if path is not None and path.is_file():
        state = load_checkpoint(path, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and "scheduler" in state:
            scheduler.load_state_dict(state["scheduler"])
        history = History.from_state_dict(state["history"])
        step = int(state["step"])

    def save() -> None:
        if path is None:
            return
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "history": history.state_dict(),
            "step": step,
            "seed": seed,
        }
        if scheduler is not None:
            state["scheduler"] = scheduler.state_dict()
        save_checkpoint(state, path)

    if is_tensors:
        batches = tensor_batches(data[0], data[1], batch_size, seed, start_step=step)
    else:
        batches = _loader_batches(data)  # type: ignore[arg-type]
    model.train()
    sum_loss = sum_acc = 0.0
    count = 0
    for _ in progress(range(step, steps), total=steps - step, desc=desc):
        x, y = next(batches)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if transform is not None:
            x = transform(x)
        logits = model(x)
        loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        step += 1
        sum_loss += loss.item()
        sum_acc += (logits.argmax(1) == y).float().mean().item()
        count += 1
        if step % log_every == 0 or step == steps:
            history.log(step=step, loss=sum_loss / count, accuracy=sum_acc / count)
            sum_loss = sum_acc = 0.0
            count = 0
        if step % checkpoint_every == 0 and step < steps:
            save()
    save()
    return history
