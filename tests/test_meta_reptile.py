"""Reptile's update against its formula, computed with torch.optim on a tiny model."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mlbook.data import Episode
from mlbook.meta import Reptile


def task_batch(num_tasks=3):
    g = torch.Generator().manual_seed(0)
    sx, qx = torch.randn(num_tasks, 6, 4, generator=g), torch.randn(num_tasks, 6, 4, generator=g)
    y = torch.tensor([0, 1, 2] * 2).expand(num_tasks, -1)
    return Episode(sx, y, qx, y)


def adapted_with_torch_optim(model, x, y, kind, lr, steps):
    clone = copy.deepcopy(model)
    opt = (torch.optim.SGD(clone.parameters(), lr=lr) if kind == "sgd"
           else torch.optim.Adam(clone.parameters(), lr=lr, betas=(0.0, 0.999), eps=1e-8))
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(clone(x), y).backward()
        opt.step()
    return [p.detach() for p in clone.parameters()]


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_outer_step_equals_reptile_formula(kind):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    ep = task_batch()
    ep = Episode(ep.support_x.double(), ep.support_y, ep.query_x.double(), ep.query_y)
    learner = Reptile(model, inner_lr=0.1, inner_steps=3, inner_optimizer=kind, threads=2)
    theta = [p.detach().clone() for p in model.parameters()]
    accuracy_at_phi = learner.task_scores(ep).mean().item()  # query accuracy after adapting
    phis = [adapted_with_torch_optim(model, ep.support_x[t], ep.support_y[t], kind, 0.1, 3)
            for t in range(3)]
    epsilon = 0.5
    expected = [th + epsilon * sum(phi[i] - th for phi in phis) / 3 for i, th in enumerate(theta)]

    outer = torch.optim.SGD(model.parameters(), lr=epsilon)
    loss, acc = learner.meta_loss(ep)
    outer.zero_grad()
    loss.backward()
    outer.step()
    for p, e in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.detach(), e, rtol=1e-10, atol=1e-12)
    assert acc == pytest.approx(accuracy_at_phi)
    assert not torch.equal(theta[0], model[0].weight.detach())


def test_evaluate_and_bad_input():
    model = nn.Sequential(nn.Linear(4, 3))
    learner = Reptile(model, inner_lr=0.1, inner_steps=2, inner_optimizer="sgd")
    batch = task_batch()
    scores = learner.task_scores(batch, steps=4)
    for t in range(3):  # each score is the query accuracy at that task's adapted weights
        phi = learner.adapt(batch.support_x[t], batch.support_y[t], 4)
        hits = learner.predict(phi, batch.query_x[t]).argmax(1) == batch.query_y[t]
        assert scores[t].item() == pytest.approx(hits.float().mean().item())
    with pytest.raises(ValueError, match="inner_steps"):
        Reptile(model, inner_steps=0)
    with pytest.raises(ValueError, match="inner_optimizer"):
        Reptile(model, inner_optimizer="rmsprop")


def adapted_on_minibatches(model, x, y, lr, batches):
    clone = copy.deepcopy(model)
    opt = torch.optim.Adam(clone.parameters(), lr=lr, betas=(0.0, 0.999), eps=1e-8)
    for index in batches:
        opt.zero_grad()
        F.cross_entropy(clone(x[index]), y[index]).backward()
        opt.step()
    return [p.detach() for p in clone.parameters()]


def test_inner_batch_trains_each_step_on_fresh_examples():
    """With ``inner_batch``, the outer step equals Reptile's formula with each inner step
    on the next slice of a random order of the support set (one pass before any repeat),
    whatever the number of task threads."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    ep = task_batch()
    ep = Episode(ep.support_x.double(), ep.support_y, ep.query_x.double(), ep.query_y)
    learner = Reptile(model, inner_lr=0.1, inner_steps=4, inner_batch=2, threads=2)
    theta = [p.detach().clone() for p in model.parameters()]
    torch.manual_seed(7)
    batches = [learner.inner_batches(6, 4) for _ in range(3)]
    for b in batches:  # 4 slices of 2 from 6 examples: the first 3 slices are a permutation
        assert [len(i) for i in b] == [2, 2, 2, 2]
        assert sorted(torch.cat(b[:3]).tolist()) == list(range(6))
    phis = [adapted_on_minibatches(model, ep.support_x[t], ep.support_y[t], 0.1, batches[t])
            for t in range(3)]
    expected = [th + sum(phi[i] - th for phi in phis) / 3 for i, th in enumerate(theta)]
    full = adapted_with_torch_optim(model, ep.support_x[0], ep.support_y[0], "adam", 0.1, 4)
    assert not torch.allclose(phis[0][0], full[0])  # minibatches are not the full batch
    torch.manual_seed(7)  # the learner draws the same orders, task by task, on this thread
    loss, _ = learner.meta_loss(ep)
    loss.backward()
    torch.optim.SGD(model.parameters(), lr=1.0).step()
    for p, e in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.detach(), e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_inner_batch_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match="inner_batch must be a positive int"):
        Reptile(nn.Linear(4, 3), inner_batch=bad)


def test_inner_batch_larger_than_the_support_set_is_refused():
    learner = Reptile(nn.Linear(4, 3), inner_batch=10)
    with pytest.raises(ValueError, match="larger than the support set"):
        learner.meta_loss(task_batch())
