"""Small float64 learners, samplers and optimizers that the distributed tests train twice:
in one process (the test) and in two (``tests/_distributed_worker.py``)."""

from __future__ import annotations

import torch
from torch import nn

from mlbook.data import EpisodeSampler, fixed_episodes
from mlbook.meta import MAML, InContextLearner, ProtoNet, Reptile
from mlbook.models import Conv4

STEPS = 3  # steps of every run
CHECKPOINT_STEP, RESUMED_STEPS = 2, 4  # one-process checkpoint, resumed by two processes
SETUPS = ("maml2", "fomaml_metasgd", "reptile", "protonet", "protonet_bn", "icl")


def images(classes: int = 8, per_class: int = 5, side: int = 16) -> torch.Tensor:
    """Random 'characters' ``[classes, per_class, 1, side, side]`` in float64."""
    g = torch.Generator().manual_seed(0)
    base = torch.rand(classes, 1, 1, side, side, generator=g, dtype=torch.float64)
    noise = torch.randn(classes, per_class, 1, side, side, generator=g, dtype=torch.float64)
    return (base + 0.3 * noise).clamp(0, 1)


def sampler(num_tasks: int = 4, seed: int = 0) -> EpisodeSampler:
    return EpisodeSampler(images(), n_way=3, k_shot=1, q_queries=2, num_tasks=num_tasks,
                          seed=seed)


def validation():
    return fixed_episodes(images(), 3, 1, 2, num_tasks=4, seed=7)


def build(name: str, seed: int = 0):
    """``(learner, sampler, optimizer)`` for a setup, float64, from ``seed``."""
    torch.manual_seed(seed)
    if name in ("maml2", "fomaml_metasgd", "reptile"):
        model = Conv4(1, hidden=4, num_classes=3, image_size=16,
                      track_running_stats=False).double()
        if name == "maml2":
            learner: nn.Module = MAML(model, inner_lr=0.4, threads=1)
        elif name == "fomaml_metasgd":  # first order, learnt per-parameter inner rates
            learner = MAML(model, inner_lr=0.4, first_order=True, learn_inner_lr=True,
                           threads=1)
        else:
            learner = Reptile(model, inner_lr=0.05, inner_steps=2, threads=1)
    elif name == "protonet":  # no batch norm: the split is exact (see mlbook.meta.distributed)
        encoder = nn.Sequential(nn.Flatten(), nn.Linear(256, 16), nn.ReLU(), nn.Linear(16, 8))
        learner = ProtoNet(encoder.double())
    elif name == "icl":  # an in-context learner: no batch norm, so the split is exact
        encoder = nn.Sequential(nn.Flatten(), nn.Linear(256, 8))
        learner = InContextLearner(encoder, feature_dim=8, n_way=3, d_model=8, num_layers=1,
                                   num_heads=2, dim_feedforward=16).double()
    elif name == "protonet_bn":  # batch norm over each rank's share: ranks must still agree
        learner = ProtoNet(Conv4(1, hidden=4, num_classes=None, image_size=16).double())
    else:
        raise ValueError(name)
    if name == "reptile":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(learner.parameters(), lr=0.5)
    else:
        optimizer = torch.optim.Adam(learner.parameters(), lr=1e-2)
    return learner, sampler(), optimizer


def snapshot(learner: nn.Module, history) -> dict:
    """What a run ends with: parameters, last meta-gradients, buffers, history."""
    return {
        "params": {n: p.detach().clone() for n, p in learner.named_parameters()},
        "grads": {n: p.grad.clone() for n, p in learner.named_parameters()
                  if p.grad is not None},
        "buffers": {n: b.clone() for n, b in learner.named_buffers()},
        "history": history.state_dict(),
    }


class Crashing:
    """A sampler that raises after ``after`` batches, like a rank that crashes (``_left`` is
    private so that the ranks' fingerprints agree)."""

    def __init__(self, inner, after: int) -> None:
        self.inner, self._left, self.generator = inner, after, inner.generator
        self.num_tasks = inner.num_tasks

    def __next__(self):
        if self._left == 0:
            raise RuntimeError("simulated crash of rank 1")
        self._left -= 1
        return next(self.inner)
