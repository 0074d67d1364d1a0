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
#: Series names of checkpoints written before the history used meta_train's names.
_OLD_SERIES = {"loss": "train_loss", "accuracy": "train_acc"}


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


def _check_positive_int(**values: object) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _accuracy(model: nn.Module, data: Batch, batch_size: int,
              device: torch.device | str) -> float:
    """Fraction of ``data = (x, y)`` that ``model`` classifies correctly, in eval mode."""
    x, y = data
    was_training = model.training
    model.eval()
    correct = 0
    try:
        with torch.inference_mode():
            for start in range(0, x.shape[0], batch_size):
                pred = model(x[start : start + batch_size].to(device)).argmax(1).cpu()
                correct += int((pred == y[start : start + batch_size].cpu()).sum())
    finally:
        model.train(was_training)
    return correct / x.shape[0]


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
    val_data: Batch | None = None,
    eval_every: int = 100,
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
        Steps between two entries of the training series (``step``, ``train_loss``,
        ``train_acc``, averaged over those steps).
    val_data
        Optional held-out ``(x [V, ...], y [V])``: its accuracy is measured in eval mode every
        ``eval_every`` steps and at the end (series ``val_step``, ``val_acc``), as
        :func:`mlbook.meta.meta_train` does with its validation episodes.
    seed
        Seeds the batch order (tensors only).
    device
        Default: the device of the model's first parameter.

    Returns
    -------
    History
        Series ``step``, ``train_loss`` (mean loss, nats for cross-entropy) and ``train_acc``
        (in [0, 1], on the training batches); with ``val_data`` also ``val_step`` and
        ``val_acc``. The names are those of :func:`mlbook.meta.meta_train`'s history.

    Raises
    ------
    ValueError
        For a budget, learning rate or logging interval that is not positive, or a
        checkpoint file that is not one of this function's (nothing is written then).
    FloatingPointError
        When the loss becomes NaN or infinite. Training stops before that step updates the
        model; the last checkpoint written (if any) is kept as it was.
    """
    if (steps is None) == (epochs is None):
        raise ValueError("give exactly one of steps= or epochs=")
    is_tensors = isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor)
    _check_positive_int(batch_size=batch_size)
    if epochs is not None:
        _check_positive_int(epochs=epochs)
        per_epoch = data[0].shape[0] // batch_size if is_tensors else len(data)  # type: ignore[arg-type]
        if per_epoch < 1:
            raise ValueError(f"an epoch holds no full batch of {batch_size}: lower batch_size "
                             "or give steps=")
        steps = epochs * per_epoch
    _check_positive_int(steps=steps, log_every=log_every, checkpoint_every=checkpoint_every,
                        eval_every=eval_every)
    bad_lrs = [g["lr"] for g in optimizer.param_groups
               if isinstance(g.get("lr"), (int, float)) and not g["lr"] > 0]
    if bad_lrs:
        raise ValueError(f"the optimizer's learning rates must be > 0, got {bad_lrs}; "
                         "build it with e.g. torch.optim.Adam(model.parameters(), lr=1e-3)")
    if val_data is not None and not (
        isinstance(val_data, tuple) and len(val_data) == 2
        and all(isinstance(t, torch.Tensor) for t in val_data)
        and val_data[0].shape[0] == val_data[1].shape[0] > 0
    ):
        raise ValueError("val_data must be a pair of tensors (x [V, ...], y [V]) with V >= 1")
    loss_fn = loss_fn or F.cross_entropy
    if device is None:
        device = next(model.parameters()).device

    history, step = History(), 0
    path = Path(checkpoint) if checkpoint is not None else None
    if path is not None and path.is_file():
        state = load_checkpoint(path, map_location=device,
                                required=("model", "optimizer", "history", "step"))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and "scheduler" in state:
            scheduler.load_state_dict(state["scheduler"])
        history = History.from_state_dict(
            {_OLD_SERIES.get(name, name): values for name, values in state["history"].items()}
        )
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
        if not torch.isfinite(loss).all():
            kept = (f"the last checkpoint {path} is kept as it was" if path is not None
                    and path.is_file() else "no checkpoint was written")
            raise FloatingPointError(
                f"the loss is {loss.item()} at step {step + 1}: training diverged, so it stops "
                f"before this step changes the model ({kept}). Lower the learning rate, clip "
                "gradients or check the inputs for NaN."
            )
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
            history.log(step=step, train_loss=sum_loss / count, train_acc=sum_acc / count)
            sum_loss = sum_acc = 0.0
            count = 0
        if val_data is not None and (step % eval_every == 0 or step == steps):
            history.log(val_step=step,
                        val_acc=_accuracy(model, val_data, batch_size, device))
        if step % checkpoint_every == 0 and step < steps:
            save()
    save()
    return history
