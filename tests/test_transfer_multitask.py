"""Multi-task learning: shared trunk, per-task gradients and their cosine, the training loop."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mlbook.transfer import (
    MultiTaskNet,
    gradient_cosine,
    task_gradients,
    task_losses,
    train_multitask,
)


def net() -> MultiTaskNet:
    return MultiTaskNet(nn.Sequential(nn.Linear(4, 6), nn.ReLU()),
                        {"a": nn.Linear(6, 3), "b": nn.Linear(6, 2)})


def test_heads_share_the_trunk():
    torch.manual_seed(0)
    model = net()
    x = torch.randn(5, 4)
    out = model(x)
    assert set(out) == {"a", "b"} and out["a"].shape == (5, 3) and out["b"].shape == (5, 2)
    assert torch.equal(out["a"], model(x, "a"))
    # one task's loss reaches the trunk and its own head, not the other head
    model(x, "a").sum().backward()
    assert all(p.grad is not None for p in model.trunk.parameters())
    assert all(p.grad is None for p in model.heads["b"].parameters())
    assert model.shared_parameters() == list(model.trunk.parameters())


def test_bad_task_names_raise():
    with pytest.raises(ValueError, match="at least one task"):
        MultiTaskNet(nn.Identity(), {})
    with pytest.raises(KeyError, match="unknown task"):
        net()(torch.randn(1, 4), "c")
    with pytest.raises(KeyError, match="unknown tasks"):
        task_losses(net(), {"c": (torch.randn(1, 4), torch.zeros(1, dtype=torch.long))})


def test_task_gradients_sum_to_the_joint_gradient_and_cosine_matches_formula():
    torch.manual_seed(0)
    model = net().double()
    batches = {"a": (torch.randn(7, 4).double(), torch.randint(0, 3, (7,))),
               "b": (torch.randn(5, 4).double(), torch.randint(0, 2, (5,)))}
    losses = task_losses(model, batches)
    grads = task_gradients(losses, model.shared_parameters())
    (losses["a"] + losses["b"]).backward()  # still possible: the graph was retained
    joint = torch.cat([p.grad.flatten() for p in model.shared_parameters()])
    assert torch.allclose(grads["a"] + grads["b"], joint, atol=1e-14)
    a, b = grads["a"], grads["b"]
    expected = float(a @ b / (a.norm() * b.norm()))
    assert gradient_cosine(a, b) == pytest.approx(expected, abs=1e-12)
    assert gradient_cosine(a, a) == pytest.approx(1.0)
    assert gradient_cosine(a, -a) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="same shape"):
        gradient_cosine(a, b[:-1])


def run(second_labels: torch.Tensor, x: torch.Tensor):
    torch.manual_seed(0)
    model = MultiTaskNet(nn.Sequential(nn.Linear(4, 8), nn.ReLU()),
                         {"a": nn.Linear(8, 2), "b": nn.Linear(8, 2)})
    data = {"a": (x, (x[:, 0] > 0).long()), "b": (x, second_labels)}
    return train_multitask(model, data, torch.optim.Adam(model.parameters(), lr=1e-2),
                           steps=60, batch_size=16, log_every=20)


def test_train_multitask_logs_losses_and_cosine_and_learns():
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    related = run((x[:, 0] > 0).long(), x)  # the same task with a second head
    assert related["step"] == [20, 40, 60]
    assert related["loss_a"][-1] < related["loss_a"][0]
    assert related["loss_b"][-1] < related["loss_b"][0]
    # once the heads have learnt, the same task pushes the trunk the same way (at first the
    # two random heads read the features differently); random labels do not
    unrelated = run(torch.randint(0, 2, (64,), generator=torch.Generator().manual_seed(1)), x)
    assert related["cosine"][-1] > 0.3
    assert max(unrelated["cosine"]) < 0.1


def test_train_multitask_single_task_has_no_cosine():
    model = MultiTaskNet(nn.Linear(4, 3), {"a": nn.Linear(3, 2)})
    x = torch.randn(8, 4)
    h = train_multitask(model, {"a": (x, torch.zeros(8, dtype=torch.long))},
                        torch.optim.SGD(model.parameters(), lr=0.1), steps=2, batch_size=4)
    assert "cosine" not in h and len(h["loss_a"]) == 1


def test_train_multitask_rejects_bad_input():
    model = net()
    x, y = torch.randn(8, 4), torch.zeros(8, dtype=torch.long)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="fewer than batch_size"):
        train_multitask(model, {"a": (x, y)}, opt, steps=1, batch_size=9)
    with pytest.raises(ValueError, match="examples"):
        train_multitask(model, {"a": (x, y[:7])}, opt, steps=1, batch_size=4)
    with pytest.raises(KeyError, match="weights"):
        train_multitask(model, {"a": (x, y)}, opt, steps=1, batch_size=4, weights={"z": 1.0})
    with pytest.raises(ValueError, match="steps"):
        train_multitask(model, {"a": (x, y)}, opt, steps=0)
