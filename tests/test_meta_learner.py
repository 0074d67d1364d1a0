"""The learner interface: every learner swaps in, for classification and regression alike,
and batch norm follows one rule."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mlbook.data import Episode, SinusoidTasks
from mlbook.meta import MAML, MetaLearner, ProtoNet, Reptile, evaluate, meta_train
from mlbook.meta._fast.interpreter import Interpreter
from mlbook.models import Conv4

README = Path(__file__).resolve().parents[1] / "README.md"
SWAPS = {
    "MAML": "MAML(Conv4(num_classes=5, track_running_stats=False), inner_lr=0.4)",
    "FOMAML": "MAML(Conv4(num_classes=5, track_running_stats=False), first_order=True)",
    "ANIL": "MAML(Conv4(num_classes=5, track_running_stats=False), adapt='head')",
    "Meta-SGD": "MAML(Conv4(num_classes=5, track_running_stats=False), learn_inner_lr=True)",
    "Reptile": "mlbook.meta.Reptile(Conv4(num_classes=5, track_running_stats=False))",
    "ProtoNet": "mlbook.meta.ProtoNet(Conv4())",
}


def readme_example() -> str:
    code = re.search(r"## Using `mlbook` in your own code\n.*?```python\n(.*?)```",
                     README.read_text(), re.S).group(1)
    assert "learner = MAML(" in code and "steps=500" in code
    # A smoke run: 2 outer steps and 4 test tasks instead of 500 and 200.
    return code.replace("steps=500", "steps=2").replace("num_tasks=200", "num_tasks=4")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SWAPS))
def test_readme_example_runs_with_every_learner(name, capsys, shared_data, monkeypatch):
    monkeypatch.setenv("MLBOOK_DATA", str(shared_data))
    code = re.sub(r"learner = MAML\(.*?\)\s*#", f"learner = {SWAPS[name]}  #",
                  readme_example(), count=1)
    assert SWAPS[name] in code
    namespace: dict = {}
    exec(compile("import mlbook.meta\n" + code, str(README), "exec"), namespace)
    learner, history = namespace["learner"], namespace["history"]
    assert isinstance(learner, MetaLearner)
    assert history["step"] == [1, 2] and len(history["train_acc"]) == 2
    acc, ci = eval(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 <= acc <= 1 and ci >= 0


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(1, 16), nn.ReLU(), nn.Linear(16, 1))


@pytest.mark.parametrize("make", [
    lambda m: MAML(m, inner_lr=0.01, loss_fn=F.mse_loss, vectorize=True),
    lambda m: MAML(m, inner_lr=0.01, loss_fn=F.mse_loss),
    lambda m: Reptile(m, inner_lr=0.01, inner_steps=2, inner_optimizer="sgd",
                      loss_fn=F.mse_loss),
])
def test_regression_batches_train_and_evaluate_with_mse(make):
    tasks, generator = SinusoidTasks(), torch.Generator().manual_seed(0)
    learner = make(mlp())
    sampler = iter(lambda: tasks.sample(4, 5, 5, generator), None)
    val = tasks.sample(6, 5, 5, torch.Generator().manual_seed(1))
    before, _ = evaluate(learner, val, batch_size=4)
    opt = torch.optim.Adam(learner.meta_parameters(), lr=1e-2)
    history = meta_train(learner, sampler, opt, steps=30, val_episodes=val, eval_every=10,
                         progress=False)
    assert "train_mse" in history and "val_mse" in history and "val_acc" not in history
    after, ci = evaluate(learner, val, batch_size=4)
    assert history["val_mse"][0] == pytest.approx(before) and after < before
    # the score is the mean of the per-task query MSEs after adaptation
    phi = learner.adapt(val.support_x[0], val.support_y[0])
    mse0 = F.mse_loss(learner.predict(phi, val.query_x[0]), val.query_y[0]).item()
    assert learner.task_scores(val)[0].item() == pytest.approx(mse0, rel=1e-5)


def running_stats_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8, 3))


@pytest.mark.parametrize("make", [MAML, Reptile])
def test_models_with_running_statistics_are_refused(make):
    with pytest.raises(ValueError, match="track_running_stats=False"):
        make(running_stats_net())


@pytest.mark.parametrize("fast", [True, False])
def test_batch_statistics_in_train_and_eval_mode_on_both_paths(fast):
    """One rule: MAML's batch norm uses the batch's statistics whatever the module's mode,
    on the interpreted (fast) and the functional_call (readable) path alike."""
    torch.manual_seed(1)
    model = Conv4(1, hidden=4, num_classes=3, image_size=16, track_running_stats=False).double()
    x = torch.randn(6, 1, 16, 16, dtype=torch.float64) * 3 + 2
    learner = MAML(model, fast=fast)
    params = learner.params()
    reference = Interpreter(model, layout=False)(params, x)
    outputs = []
    for mode in (True, False):
        learner.train(mode)
        outputs.append(learner.predict(params, x))
    for out in outputs:
        torch.testing.assert_close(out, reference, rtol=1e-12, atol=1e-12)
    # and it is batch statistics: a sample's output depends on the other samples
    assert not torch.allclose(learner.predict(params, x[:3]), reference[:3])


def test_meta_train_rejects_objects_that_are_not_learners():
    with pytest.raises(TypeError, match="not a meta-learner.*task_scores"):
        meta_train(nn.Linear(2, 2), iter([]), torch.optim.SGD([torch.zeros(1)], lr=1), steps=1)


def test_protonet_follows_the_interface():
    net = ProtoNet(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)))
    assert isinstance(net, MetaLearner)
    sx = torch.randn(4, 1, 2, 2)
    protos = net.adapt(sx, torch.tensor([0, 0, 1, 1]))
    assert protos.shape == (2, 3) and net.predict(protos, sx).shape == (4, 2)
    with pytest.raises(ValueError, match="integer class ids"):
        net.adapt(sx, torch.zeros(4))
    labels = torch.tensor([[0, 0, 1, 1]])
    episode = Episode(sx[None], labels, sx[None], labels)
    assert net.task_scores(episode).shape == (1,)
