"""Bad input to the meta-learners fails early, saying what was wrong and how to fix it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mlbook.data import Episode
from mlbook.meta import MAML, ProtoNet, Reptile, evaluate, meta_train
from mlbook.models import Conv4


def conv(num_classes=3) -> nn.Module:
    return Conv4(1, hidden=4, num_classes=num_classes, image_size=16, track_running_stats=False)


def episode(tasks=2, ways=3, dtype=torch.float32) -> Episode:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(ways).expand(tasks, -1).contiguous()
    return Episode(torch.rand(tasks, ways, 1, 16, 16, generator=g).to(dtype), labels,
                   torch.rand(tasks, ways, 1, 16, 16, generator=g).to(dtype), labels.clone())


LEARNERS = [lambda: MAML(conv()), lambda: MAML(conv(), fast=False), lambda: Reptile(conv()),
            lambda: ProtoNet(Conv4(1, hidden=4, image_size=16))]


@pytest.mark.parametrize("make", LEARNERS)
def test_integer_images_are_refused(make):
    ep = episode()
    bad = Episode((ep.support_x * 255).to(torch.uint8), ep.support_y, ep.query_x, ep.query_y)
    with pytest.raises(ValueError, match=r"floating point.*\.float\(\)"):
        make().meta_loss(bad)


@pytest.mark.parametrize("make", LEARNERS)
def test_labels_out_of_range_are_refused(make):
    ep = episode()
    with pytest.raises(ValueError, match="class ids must be 0..N-1"):
        make().meta_loss(Episode(ep.support_x, ep.support_y - 1, ep.query_x, ep.query_y))
    with pytest.raises(ValueError, match="query class must appear in the support set"):
        make().meta_loss(Episode(ep.support_x, ep.support_y, ep.query_x, ep.query_y + 1))


def test_float_and_integer_targets_are_not_mixed():
    ep = episode()
    with pytest.raises(ValueError, match="both hold class ids"):
        MAML(conv()).meta_loss(Episode(ep.support_x, ep.support_y.float(), ep.query_x,
                                       ep.query_y))


@pytest.mark.parametrize("value", [0, -0.1, float("nan"), float("inf"), True])
def test_bad_inner_learning_rates_are_refused(value):
    with pytest.raises(ValueError, match="inner_lr must be a positive finite number"):
        MAML(conv(), inner_lr=value)
    with pytest.raises(ValueError, match="inner_lr must be a positive finite number"):
        Reptile(conv(), inner_lr=value)


def test_bad_fast_and_head_options_are_refused():
    with pytest.raises(ValueError, match="fast must be True, False or 'threads'"):
        MAML(conv(), fast="yes")
    with pytest.raises(ValueError, match="head_init must be None or 'prototypes'"):
        MAML(conv(), head_init="zeros")
    with pytest.raises(ValueError, match="threads must be a positive int"):
        MAML(conv(), threads=0)
    with pytest.raises(ValueError, match="vectorize=True does not support head_init"):
        MAML(nn.Sequential(nn.Linear(2, 2)), head_init="prototypes", head_name="0",
             vectorize=True)


def test_unsupported_layer_in_the_fast_path_names_it_and_the_fix():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Dropout(), nn.Flatten(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match=r"cannot run a Dropout \(at '1\.'\).*fast=False"):
        MAML(model)
    with pytest.raises(ValueError, match="Dropout.*fast=False"):
        Reptile(model)
    MAML(model, fast=False)  # the readable path runs any module


def test_more_classes_than_the_head_has_fails_clearly_for_protomaml():
    learner = MAML(conv(num_classes=2), head_init="prototypes")
    with pytest.raises(ValueError, match=r"labels must be integers in 0..1"):
        learner.meta_loss(episode(ways=3))


def test_non_finite_meta_loss_stops_training_and_keeps_the_last_checkpoint(tmp_path):
    learner = MAML(conv(), inner_lr=0.4)
    optimizer = torch.optim.SGD(learner.meta_parameters(), lr=0.1)
    path = tmp_path / "run.pt"
    batches = iter([episode()] * 2 + [Episode(*(t.clone() for t in episode()))] * 10)
    meta_train(learner, batches, optimizer, steps=2, eval_every=2, checkpoint=path,
               progress=False)
    saved = path.read_bytes()
    poisoned = episode()
    poisoned.query_x[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="meta-loss became nan at step 3.*checkpoint"):
        meta_train(learner, iter([poisoned] * 4), optimizer, steps=4, eval_every=2,
                   checkpoint=path, progress=False)
    assert path.read_bytes() == saved  # the last good checkpoint is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]  # nothing half-written


def test_evaluate_needs_tasks_and_a_positive_batch():
    learner = MAML(conv())
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        evaluate(learner, episode(), batch_size=-1)
    with pytest.raises(TypeError, match="must be a tensor"):
        evaluate(learner, (1, 2, 3, 4))


def test_regression_loss_with_protonet_is_refused():
    net = ProtoNet(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))
    x = torch.randn(1, 4, 1, 2, 2)
    y = torch.randn(1, 4, 1)
    with pytest.raises(ValueError, match="integer class ids"):
        net.meta_loss(Episode(x, y, x, y))
