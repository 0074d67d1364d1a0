"""The learner's task runner is chosen once, at construction, from its options."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mlbook.meta._fast.runner as runner_mod
import mlbook.meta._fast.tasks as tasks_mod
from mlbook.meta import MAML
from mlbook.meta._fast.runner import PlainRunner, ThreadedRunner, VmapRunner


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(1, 8), nn.ReLU(), nn.Linear(8, 1)).double()


class Batch:
    def __init__(self) -> None:
        g = torch.Generator().manual_seed(1)
        self.support_x = torch.randn(3, 5, 1, generator=g, dtype=torch.float64)
        self.support_y = torch.randn(3, 5, 1, generator=g, dtype=torch.float64)
        self.query_x = torch.randn(3, 5, 1, generator=g, dtype=torch.float64)
        self.query_y = torch.randn(3, 5, 1, generator=g, dtype=torch.float64)


@pytest.mark.parametrize(("options", "kind", "layout"), [
    ({"fast": False}, PlainRunner, None),
    ({"fast": True}, ThreadedRunner, True),
    ({"fast": "threads"}, ThreadedRunner, False),
    ({"fast": True, "vectorize": True}, VmapRunner, None),
    ({"fast": False, "vectorize": True}, VmapRunner, None),
])
def test_runner_is_chosen_once_from_the_options(options, kind, layout):
    learner = MAML(mlp(), inner_lr=0.01, loss_fn=F.mse_loss, **options)
    assert type(learner.runner) is kind
    assert learner.forward_fn is learner.runner.forward_fn
    if layout is not None:
        assert learner.runner.forward_fn.layout is layout
    runner = learner.runner
    learner.meta_loss(Batch())[0].backward()
    learner.task_scores(Batch())
    assert learner.runner is runner  # not rebuilt per call


def test_plain_maml_runs_no_fast_code(monkeypatch):
    learner = MAML(mlp(), inner_lr=0.01, loss_fn=F.mse_loss, fast=False)

    def refuse(*args, **kwargs):
        raise AssertionError("fast=False ran _fast code")

    for module, name in [(tasks_mod, "meta_loss_in_threads"), (tasks_mod, "map_task_chunks"),
                         (tasks_mod, "vmap_meta_loss"), (runner_mod, "meta_loss_in_threads"),
                         (runner_mod, "map_task_chunks"), (runner_mod, "vmap_meta_loss"),
                         (tasks_mod.AttachGradients, "apply")]:
        monkeypatch.setattr(module, name, refuse)
    monkeypatch.setattr(runner_mod.Interpreter, "__call__", refuse)
    loss, _ = learner.meta_loss(Batch())
    loss.backward()
    assert learner.task_scores(Batch()).shape == (3,)


def test_plain_reptile_runs_no_fast_code(monkeypatch):
    from mlbook.meta import Reptile

    learner = Reptile(mlp(), inner_lr=0.01, inner_steps=2, loss_fn=F.mse_loss, fast=False)
    assert type(learner.runner) is PlainRunner
    theta = [p.detach().clone() for p in learner.model.parameters()]

    def refuse(*args, **kwargs):
        raise AssertionError("fast=False ran _fast code")

    monkeypatch.setattr(tasks_mod.AttachGradients, "apply", refuse)
    monkeypatch.setattr(runner_mod, "map_task_chunks", refuse)
    monkeypatch.setattr(runner_mod.Interpreter, "__call__", refuse)
    batch = Batch()
    loss, _ = learner.meta_loss(batch)
    loss.backward()
    # the gradient is theta - mean phi, and the loss's value the mean query loss
    phis = [learner.adapt(batch.support_x[t], batch.support_y[t]) for t in range(3)]
    with torch.no_grad():
        query = torch.stack([F.mse_loss(learner.predict(phi, batch.query_x[t]), batch.query_y[t])
                             for t, phi in enumerate(phis)]).mean()
    assert loss.item() == query.item()
    for (name, p), before in zip(learner.model.named_parameters(), theta, strict=True):
        mean_phi = sum(phi[name] for phi in phis) / 3
        torch.testing.assert_close(p.grad, before - mean_phi, rtol=0, atol=1e-12)
