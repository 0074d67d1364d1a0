"""Meta-training and evaluation for any meta-learner (MAML family, ProtoNets, Reptile).

A *learner* follows :class:`mlbook.meta.MetaLearner`; two of its methods are used here:

* ``meta_loss(episode) -> (loss, score)``: ``loss.backward()`` gives the meta-gradient of
  ``learner.meta_parameters()``, which the outer ``optimizer`` then applies;
* ``task_scores(episode, steps=None) -> Tensor [T]``: per-task query score after adaptation
  (``steps`` lets MAML adapt longer at test time than during training).

Scores are accuracies for classification episodes and mean squared errors for regression
batches (:func:`mlbook.meta.learner.score_name`). :func:`meta_train` runs the outer loop for
a number of steps or a wall-clock budget, scores fixed validation episodes now and then, and
writes atomic checkpoints it can resume from. :func:`evaluate` reports the mean score with its
95% confidence interval, as papers do.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mlbook import loops
from mlbook.checkpoint import load_checkpoint, save_checkpoint
from mlbook.loops import History, mean_confidence_interval
from mlbook.meta._tasks import check_episode, score_name
from mlbook.meta.distributed import join
from mlbook.meta.learner import MetaLearner


def _check_learner(learner: Any) -> None:
    if not isinstance(learner, MetaLearner):
        missing = [m for m in ("meta_parameters", "meta_loss", "adapt", "predict", "task_scores")
                   if not callable(getattr(learner, m, None))]
        raise TypeError(f"{type(learner).__name__} is not a meta-learner: it lacks {missing} "
                        "(see mlbook.meta.MetaLearner; MAML, Reptile and ProtoNet have them)")


def _task_slices(episodes: Any, batch_size: int):
    """Consecutive slices of at most ``batch_size`` tasks of any episode batch (an
    ``Episode``, a ``SinusoidBatch``: a named tuple of tensors with tasks first)."""
    num_tasks = check_episode(episodes)
    for start in range(0, num_tasks, batch_size):
        yield type(episodes)(*(t[start : start + batch_size] for t in episodes))


def episode_scores(learner: nn.Module, episodes, batch_size: int = 50,
                   steps: int | None = None) -> torch.Tensor:
    """Per-task query scores ``[T]`` of ``learner`` on ``episodes``, in batches of tasks.

    Accuracies for classification, mean squared errors for regression. The learner is put in
    eval mode for the call (and restored): ProtoNet encoders with ordinary batch norm use their
    running statistics; MAML and Reptile use batch statistics always.
    """
    _check_learner(learner)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    was_training = learner.training
    learner.eval()
    try:
        scores = [learner.task_scores(chunk, steps=steps)
                  for chunk in _task_slices(episodes, batch_size)]
    finally:
        learner.train(was_training)
    return torch.cat(scores)


def evaluate(learner: nn.Module, episodes, batch_size: int = 50,
             steps: int | None = None) -> tuple[float, float]:
    """Mean query score over the tasks of ``episodes`` and its 95% CI half-width.

    Parameters
    ----------
    learner
        A :class:`MetaLearner`.
    episodes
        An :class:`mlbook.data.Episode` (or ``SinusoidBatch``) with ``T >= 2`` tasks (e.g.
        ``fixed_episodes(...)``).
    batch_size
        Tasks per call of ``task_scores`` (bounds memory).
    steps
        Test-time adaptation steps for learners that adapt (MAML: e.g. 3 or 10).

    Returns
    -------
    (mean, half_width)
        Accuracy in [0, 1] (classification) or mean squared error (regression); the interval
        is :func:`mlbook.loops.mean_confidence_interval`.
    """
    scores = episode_scores(learner, episodes, batch_size, steps)
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
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    time_budget_s: float | None = None,
    val_episodes: Any = None,
    eval_every: int = 100,
    eval_steps: int | None = None,
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
        Outer optimizer over ``learner.meta_parameters()`` (e.g. Adam, lr 1e-3).
    steps
        Stop after this many outer steps in total (counting steps done before a resume).
    scheduler
        An optional learning-rate schedule of ``optimizer``, stepped after every outer step
        and saved in checkpoints (e.g. ``StepLR(optimizer, 2000, 0.5)``, Snell et al.).
    time_budget_s
        Stop once this much *training* time (seconds, wall clock, validation and
        checkpointing excluded, summed over resumes) is spent. With ``steps`` too, whichever
        comes first.
    val_episodes
        Fixed validation episodes, scored every ``eval_every`` steps and at the end.
    eval_every
        Steps between validations (and checkpoints).
    eval_steps, eval_batch_size
        Passed to :func:`evaluate` (``steps``, ``batch_size``).
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
        accuracies in [0, 1], times in seconds of training). For regression batches the
        scores are mean squared errors, named ``train_mse``, ``val_mse``.
    """
    _check_budget(steps, time_budget_s, eval_every)
    _check_learner(learner)
    history, step, train_time = History(), 0, 0.0
    gen = _rng_holder(sampler)
    if checkpoint is not None and Path(checkpoint).is_file():
        state = load_checkpoint(checkpoint)
        learner.load_state_dict(state["learner"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            if state.get("scheduler") is None:
                raise ValueError(f"checkpoint {checkpoint} was written without a scheduler; "
                                 "resume it with scheduler=None or start a new run")
            scheduler.load_state_dict(state["scheduler"])
        history = History.from_state_dict(state["history"])
        step, train_time = int(state["step"]), float(state["train_time_s"])
        torch.set_rng_state(state["torch_rng"])
        if gen is not None and state.get("sampler_rng") is not None:
            gen.set_state(state["sampler_rng"])
    # Under torchrun: join the process group, check the ranks agree, keep this rank's tasks.
    world = join(learner, sampler, optimizer, steps=steps, time_budget_s=time_budget_s,
                             eval_every=eval_every, val_episodes=val_episodes, step=step)
    sampler = world.shard(sampler)

    def save() -> None:
        if checkpoint is None or not world.is_writer:
            return
        save_checkpoint({
            "learner": learner.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "history": history.state_dict(),
            "step": step,
            "train_time_s": train_time,
            "torch_rng": torch.get_rng_state(),
            "sampler_rng": gen.get_state() if gen is not None else None,
        }, checkpoint)

    def validate() -> None:
        if val_episodes is None or ("val_step" in history and history.last("val_step") == step):
            return
        score, ci = evaluate(learner, val_episodes, eval_batch_size, eval_steps)
        history.log(val_step=step, **{f"val_{score_name(val_episodes.query_y)}": score},
                    val_ci95=ci, val_time_s=train_time)

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
        loss, score = learner.meta_loss(episode)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # The mean over ranks of gradients, loss, accuracy and time (one process: as they are).
        loss_value, score, seconds = world.average(loss, score, time.perf_counter() - start)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        train_time += seconds
        step += 1
        history.log(step=step, train_loss=loss_value,
                    **{f"train_{score_name(episode.query_y)}": score}, train_time_s=train_time)
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
