"""Meta-training and evaluation for any meta-learner (MAML family, ProtoNets, Reptile).

A *learner* is an ``nn.Module`` with two methods (the protocol :class:`MetaLearner`):

* ``meta_loss(episode) -> (loss, accuracy)``: ``loss.backward()`` gives the meta-gradient of
  the learner's parameters, which the outer ``optimizer`` then applies;
* ``evaluate_episode(episode, inner_steps=None) -> Tensor [T]``: per-task query accuracy
  (``inner_steps`` lets MAML adapt longer at test time than during training).

:func:`meta_train` runs the outer loop for a number of steps or a wall-clock budget, scores
fixed validation episodes now and then, and writes atomic checkpoints it can resume from.
:func:`evaluate` reports mean accuracy with its 95% confidence interval, as papers do.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from mlbook import loops
from mlbook.checkpoint import load_checkpoint, save_checkpoint
from mlbook.data.episodes import Episode
from mlbook.loops import History, mean_confidence_interval
from mlbook.meta import distributed


class MetaLearner(Protocol):
    """What :func:`meta_train` and :func:`evaluate` need from a learner (an ``nn.Module``)."""

    def meta_loss(self, episode: Any) -> tuple[torch.Tensor, float]: ...

    def evaluate_episode(self, episode: Any, inner_steps: int | None = None) -> torch.Tensor: ...


def episode_scores(learner: nn.Module, episodes, batch_size: int = 50,
                   inner_steps: int | None = None) -> torch.Tensor:
    """Per-task query accuracy ``[T]`` of ``learner`` on ``episodes``, in batches of tasks.

    The learner is put in eval mode for the call (and restored), so encoders with ordinary
    batch norm use their running statistics; MAML's batch norm uses batch statistics always.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    was_training = learner.training
    learner.eval()
    try:
        scores = [learner.evaluate_episode(chunk, inner_steps=inner_steps)
                  for chunk in Episode(*episodes).chunks(batch_size)]
    finally:
        learner.train(was_training)
    return torch.cat(scores)


def evaluate(learner: nn.Module, episodes, batch_size: int = 50,
             inner_steps: int | None = None) -> tuple[float, float]:
    """Mean query accuracy over the tasks of ``episodes`` and its 95% CI half-width.

    Parameters
    ----------
    learner
        A :class:`MetaLearner`.
    episodes
        An :class:`mlbook.data.Episode` with ``T >= 2`` tasks (e.g. ``fixed_episodes(...)``).
    batch_size
        Tasks per call of ``evaluate_episode`` (bounds memory).
    inner_steps
        Test-time adaptation steps for learners that adapt (MAML: e.g. 3 or 10).

    Returns
    -------
    (mean, half_width)
        Accuracy in [0, 1]; the interval is :func:`mlbook.loops.mean_confidence_interval`.
    """
    scores = episode_scores(learner, episodes, batch_size, inner_steps)
    return mean_confidence_interval(scores.tolist())


def _check_budget(steps: int | None, time_budget_s: float | None, eval_every: int) -> None:
    if steps is None and time_budget_s is None:
        raise ValueError("give steps= (outer iterations) or time_budget_s= (seconds), or both")
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 0):
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")
    budget = time_budget_s
    if budget is not None and not (
        isinstance(budget, (int, float)) and math.isfinite(budget) and budget >= 0
    ):
        raise ValueError(f"time_budget_s must be a finite number of seconds >= 0, got {budget!r}")
    if not isinstance(eval_every, int) or isinstance(eval_every, bool) or eval_every < 1:
        raise ValueError(f"eval_every must be a positive int, got {eval_every!r}")


def _rng_holder(sampler: Any) -> torch.Generator | None:
    """The sampler's torch.Generator, saved in checkpoints so a resumed run sees the same tasks."""
    gen = getattr(sampler, "generator", None)
    return gen if isinstance(gen, torch.Generator) else None


def meta_train(
    learner: nn.Module,
    sampler: Any,
    optimizer: torch.optim.Optimizer,
    steps: int | None = None,
    time_budget_s: float | None = None,
    val_episodes: Any = None,
    eval_every: int = 100,
    eval_inner_steps: int | None = None,
    eval_batch_size: int = 50,
    checkpoint: str | os.PathLike | None = None,
    progress: bool = True,
) -> History:
    """Meta-train ``learner`` on episodes from ``sampler`` with the outer ``optimizer``.

    Parameters
    ----------
    learner
        A :class:`MetaLearner` (``MAML``, ``ProtoNet``, ``Reptile``).
    sampler
        An iterator of episode batches, e.g. :class:`mlbook.data.EpisodeSampler`. If it has a
        ``generator`` attribute (a ``torch.Generator``), its state goes into checkpoints.
    optimizer
        Outer optimizer over ``learner.parameters()`` (e.g. Adam, lr 1e-3).
    steps
        Stop after this many outer steps in total (counting steps done before a resume).
    time_budget_s
        Stop once this much *training* time (seconds, wall clock, validation and
        checkpointing excluded, summed over resumes) is spent. With ``steps`` too, whichever
        comes first.
    val_episodes
        Fixed validation episodes, scored every ``eval_every`` steps and at the end.
    eval_every
        Steps between validations (and checkpoints).
    eval_inner_steps, eval_batch_size
        Passed to :func:`evaluate`.
    checkpoint
        Path of a checkpoint. If it exists, training resumes from it (learner, optimizer,
        history, step, sampler generator, torch RNG); it is rewritten atomically at every
        validation and at the end, so a crash loses at most ``eval_every`` steps and never
        the previous checkpoint.
    progress
        Show a progress bar (:func:`mlbook.loops.progress`; ``MLBOOK_QUIET=1`` silences it).

    Returns
    -------
    History
        Series ``step``, ``train_loss``, ``train_acc``, ``train_time_s`` (one per step) and
        ``val_step``, ``val_acc``, ``val_ci95``, ``val_time_s`` (one per validation;
        accuracies in [0, 1], times in seconds of training).
    """
    _check_budget(steps, time_budget_s, eval_every)
    history, step, train_time = History(), 0, 0.0
    gen = _rng_holder(sampler)
    if checkpoint is not None and Path(checkpoint).is_file():
        state = load_checkpoint(checkpoint)
        learner.load_state_dict(state["learner"])
        optimizer.load_state_dict(state["optimizer"])
        history = History.from_state_dict(state["history"])
        step, train_time = int(state["step"]), float(state["train_time_s"])
        torch.set_rng_state(state["torch_rng"])
        if gen is not None and state.get("sampler_rng") is not None:
            gen.set_state(state["sampler_rng"])
    # Under torchrun: join the process group, check the ranks agree, keep this rank's tasks.
    world = distributed.join(learner, sampler, optimizer, steps=steps, time_budget_s=time_budget_s,
                             eval_every=eval_every, val_episodes=val_episodes, step=step)
    sampler = world.shard(sampler)

    def save() -> None:
        if checkpoint is None or not world.is_writer:
            return
        save_checkpoint({
            "learner": learner.state_dict(),
            "optimizer": optimizer.state_dict(),
            "history": history.state_dict(),
            "step": step,
            "train_time_s": train_time,
            "torch_rng": torch.get_rng_state(),
            "sampler_rng": gen.get_state() if gen is not None else None,
        }, checkpoint)

    def validate() -> None:
        if val_episodes is None or ("val_step" in history and history.last("val_step") == step):
            return
        acc, ci = evaluate(learner, val_episodes, eval_batch_size, eval_inner_steps)
        history.log(val_step=step, val_acc=acc, val_ci95=ci, val_time_s=train_time)

    def done() -> bool:
        return (steps is not None and step >= steps) or (
            time_budget_s is not None and train_time >= time_budget_s)

    if step == 0 and not done():
        validate()  # the starting point of the learning curve
    learner.train()
    total = None if steps is None else max(steps - step, 0)
    counter = itertools.count()
    ticks = (loops.progress(counter, total=total, desc="meta-train")
             if progress and world.is_writer else counter)
    for _ in ticks:
        if done():
            break
        start = time.perf_counter()
        episode = next(sampler)
        loss, acc = learner.meta_loss(episode)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # The mean over ranks of gradients, loss, accuracy and time (one process: as they are).
        loss_value, acc, seconds = world.average(loss, acc, time.perf_counter() - start)
        optimizer.step()
        train_time += seconds
        step += 1
        history.log(step=step, train_loss=loss_value, train_acc=acc, train_time_s=train_time)
        if not math.isfinite(loss_value):
            raise FloatingPointError(
                f"meta-loss became {loss_value} at step {step}; lower the outer learning rate "
                "or the inner learning rate (the last checkpoint is kept)"
            )
        if step % eval_every == 0:
            validate()
            save()
    validate()
    save()
    return history
