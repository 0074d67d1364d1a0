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
