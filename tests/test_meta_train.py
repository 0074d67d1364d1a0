"""The meta-training loop: budgets, validation, checkpoints that resume exactly, crash safety."""

from __future__ import annotations

import pytest
import torch

from mlbook.checkpoint import load_checkpoint
from mlbook.data import EpisodeSampler, fixed_episodes
from mlbook.meta import MAML, ProtoNet, evaluate, meta_train
from mlbook.models import Conv4


def images(classes=12, per_class=6, side=16):
    """Synthetic 'characters': class pattern plus noise, ``[classes, per_class, 1, S, S]``."""
    g = torch.Generator().manual_seed(0)
    base = torch.rand(classes, 1, 1, side, side, generator=g)
    return (base + 0.3 * torch.randn(classes, per_class, 1, side, side, generator=g)).clamp(0, 1)


def make_maml(seed=0):
    torch.manual_seed(seed)
    model = Conv4(1, hidden=4, num_classes=3, image_size=16, track_running_stats=False)
    learner = MAML(model, inner_lr=0.4, threads=2)
    return learner, torch.optim.Adam(learner.parameters(), lr=1e-3)


def sampler(seed=0):
    return EpisodeSampler(images(), n_way=3, k_shot=1, q_queries=2, num_tasks=2, seed=seed)


def test_resume_continues_the_same_history(tmp_path):
    val = fixed_episodes(images(), 3, 1, 2, num_tasks=4, seed=9)
    learner, opt = make_maml()
    straight = meta_train(learner, sampler(), opt, steps=6, val_episodes=val, eval_every=3,
                          progress=False)
    final = [p.detach().clone() for p in learner.parameters()]

    ckpt = tmp_path / "run.pt"
    learner, opt = make_maml()
    meta_train(learner, sampler(), opt, steps=3, val_episodes=val, eval_every=3,
               checkpoint=ckpt, progress=False)
    learner, opt = make_maml(seed=123)  # fresh objects, different init: all state comes from ckpt
    resumed = meta_train(learner, sampler(), opt, steps=6, val_episodes=val, eval_every=3,
                         checkpoint=ckpt, progress=False)
    assert resumed["step"] == [1, 2, 3, 4, 5, 6]
    assert resumed["train_loss"] == straight["train_loss"]
    assert resumed["val_step"] == straight["val_step"] == [0, 3, 6]
    assert resumed["val_acc"] == straight["val_acc"]
    for p, q in zip(learner.parameters(), final, strict=True):
        assert torch.equal(p.detach(), q)
    state = load_checkpoint(ckpt)  # weights_only=True load
    assert state["step"] == 6


class Crashing:
    """A sampler that fails after ``n`` episodes, like a killed run."""

    def __init__(self, inner, n):
        self.inner, self.n, self.generator = inner, n, inner.generator

    def __next__(self):
        if self.n == 0:
            raise RuntimeError("simulated crash")
        self.n -= 1
        return next(self.inner)


def test_crash_keeps_the_last_checkpoint(tmp_path):
    ckpt = tmp_path / "run.pt"
    learner, opt = make_maml()
    with pytest.raises(RuntimeError, match="simulated crash"):
        meta_train(learner, Crashing(sampler(), 5), opt, steps=10, eval_every=2,
                   checkpoint=ckpt, progress=False)
    state = load_checkpoint(ckpt)
    assert state["step"] == 4 and len(state["history"]["train_loss"]) == 4
    assert [p.name for p in tmp_path.iterdir()] == ["run.pt"]  # no temporary file left


def test_time_budget_and_protonet_training_improves():
    torch.manual_seed(0)
    net = ProtoNet(Conv4(1, hidden=8, num_classes=None, image_size=16))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    val = fixed_episodes(images(), 3, 1, 3, num_tasks=30, seed=1)
    before, _ = evaluate(net, val)
    hist = meta_train(net, EpisodeSampler(images(), 3, 1, 3, num_tasks=4, seed=0), opt,
                      steps=20, time_budget_s=600.0, val_episodes=val, eval_every=10,
                      progress=False)
    after, ci = evaluate(net, val)
    assert hist["val_step"] == [0, 10, 20] and hist.last("val_acc") == pytest.approx(after)
    assert after > before + 0.2 and after > 0.7 and 0 <= ci < 0.2
    zero = meta_train(net, sampler(), opt, time_budget_s=0.0, progress=False)
    assert "step" not in zero


def test_evaluate_uses_test_time_inner_steps():
    learner, _ = make_maml()
    val = fixed_episodes(images(), 3, 1, 2, num_tasks=6, seed=3)
    calls = []
    original = learner.task_scores

    def spy(episode, steps=None):
        calls.append((episode.support_x.shape[0], steps))
        return original(episode, steps)

    learner.task_scores = spy
    mean, ci = evaluate(learner, val, batch_size=4, steps=3)
    assert calls == [(4, 3), (2, 3)] and 0 <= mean <= 1 and ci >= 0


def test_bad_arguments_raise():
    learner, opt = make_maml()
    with pytest.raises(ValueError, match="steps= .* or time_budget_s="):
        meta_train(learner, sampler(), opt)
    with pytest.raises(ValueError, match="eval_every"):
        meta_train(learner, sampler(), opt, steps=1, eval_every=0)
    with pytest.raises(ValueError, match="time_budget_s"):
        meta_train(learner, sampler(), opt, time_budget_s=float("inf"))
    with pytest.raises(ValueError, match="batch_size"):
        evaluate(learner, fixed_episodes(images(), 3, 1, 2, 4), batch_size=0)
