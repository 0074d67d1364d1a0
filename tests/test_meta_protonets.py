"""Prototypical Networks: prototypes, distances and loss against direct formulas."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mlbook.data import Episode, EpisodeSampler, fixed_episodes
from mlbook.meta import ProtoNet, embed_classes, episode_scores, prototypes, squared_distances
from mlbook.models import Conv4


def test_prototypes_are_class_means():
    z = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 5.0], [10.0, 1.0], [2.0, 1.0]])
    y = torch.tensor([0, 0, 1, 2, 2])
    expected = torch.tensor([[2.0, 1.0], [0.0, 5.0], [6.0, 1.0]])
    torch.testing.assert_close(prototypes(z, y, 3), expected)


def test_squared_distances_match_loop():
    q, p = torch.randn(4, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    expected = torch.tensor(
        [[float(((q[i] - p[j]) ** 2).sum()) for j in range(2)] for i in range(4)],
        dtype=torch.float64,
    )
    torch.testing.assert_close(squared_distances(q, p), expected, rtol=0, atol=1e-14)


def test_loss_and_predict_match_direct_formula():
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    net = ProtoNet(encoder)
    sx, qx = torch.randn(2, 6, 1, 2, 2), torch.randn(2, 9, 1, 2, 2)
    sy = torch.tensor([0, 0, 1, 1, 2, 2]).expand(2, -1)
    qy = torch.tensor([0, 1, 2] * 3).expand(2, -1)
    loss, acc = net.meta_loss(Episode(sx, sy, qx, qy))
    losses, correct = [], 0
    for t in range(2):
        zs, zq = encoder(sx[t]), encoder(qx[t])
        protos = torch.stack([zs[sy[t] == c].mean(0) for c in range(3)])
        logits = -torch.cdist(zq, protos) ** 2
        torch.testing.assert_close(net.predict(net.adapt(sx[t], sy[t]), qx[t]), logits, rtol=1e-5,
                                   atol=1e-5)
        losses.append(F.cross_entropy(logits, qy[t]))
        correct += int((logits.argmax(1) == qy[t]).sum())
    torch.testing.assert_close(loss, torch.stack(losses).mean(), rtol=1e-5, atol=1e-6)
    assert acc == pytest.approx(correct / 18)
    loss.backward()
    assert encoder[1].weight.grad.abs().sum() > 0
    scores = net.task_scores(Episode(sx, sy, qx, qy))
    assert scores.shape == (2,) and float(scores.mean()) == pytest.approx(acc)


def test_bad_labels_raise():
    with pytest.raises(ValueError, match="no support example"):
        prototypes(torch.randn(3, 2), torch.tensor([0, 0, 2]), 3)
    with pytest.raises(ValueError, match="0..1"):
        prototypes(torch.randn(3, 2), torch.tensor([0, 1, 5]), 2)


def test_embed_classes_gives_the_scores_of_the_encoder_on_the_images():
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten())
    encoder(torch.randn(64, 1, 12, 12))  # move the running statistics away from 0 and 1
    images = torch.randn(12, 6, 1, 12, 12)
    embedded = embed_classes(encoder.train(), images, batch_size=7)
    assert embedded.shape == (12, 6, 8, 1, 1) and encoder.training  # the mode is restored
    direct = episode_scores(ProtoNet(encoder), fixed_episodes(images, 4, 2, 3, 10, seed=3))
    shortcut = episode_scores(ProtoNet(nn.Flatten()), fixed_episodes(embedded, 4, 2, 3, 10, seed=3))
    assert torch.equal(direct, shortcut)
    with pytest.raises(ValueError, match="classes, per_class"):
        embed_classes(encoder, images[0])


def test_classify_is_the_nearest_prototype_in_eval_mode_and_restores_the_mode():
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.BatchNorm1d(3))
    encoder[2].running_mean.fill_(5.0)  # eval mode uses these; batch statistics would not
    net = ProtoNet(encoder).train()
    sx, sy, x = torch.randn(6, 1, 2, 2), torch.tensor([0, 0, 1, 1, 2, 2]), torch.randn(9, 1, 2, 2)
    encoder.eval()
    zs, zx = encoder(sx), encoder(x)
    means = torch.stack([zs[sy == c].mean(0) for c in range(3)])
    expected = torch.cdist(zx, means).argmin(1)
    encoder.train()
    assert torch.equal(net.classify(sx, x, sy), expected)
    assert net.training and encoder.training  # the caller's mode is kept
    one_each = net.classify(sx, x)  # Lake's runs: each support image its own class
    assert torch.equal(one_each, net.classify(sx, x, torch.arange(6)))
    assert one_each.shape == (9,) and int(one_each.max()) < 6


def _train_copies(encoder: nn.Module, steps: int = 3):
    """The same ProtoNet trained ``steps`` SGD steps with and without the fast path."""
    nets = [ProtoNet(copy.deepcopy(encoder), fast=fast).train() for fast in (True, False)]
    g = torch.Generator().manual_seed(1)
    images = torch.rand(12, 4, 1, 16, 16, generator=g, dtype=torch.float64)
    sampler = EpisodeSampler(images, 6, 1, 3, num_tasks=2, seed=0)
    episodes = [next(sampler) for _ in range(steps)]
    for net in nets:
        # SGD, not Adam: a convolution's bias before batch norm has a gradient of exactly
        # zero on the fast path and of rounding noise (1e-17) on the module's; Adam would
        # scale that noise up to full-size steps (which change nothing the net computes).
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        for episode in episodes:
            opt.zero_grad()
            net.meta_loss(episode)[0].backward()
            opt.step()
    return nets


@pytest.mark.parametrize("momentum", [0.1, None])
def test_fast_path_trains_conv4_exactly_as_the_module_forward(momentum):
    """Parameters and batch-norm running averages after three steps, in float64."""
    torch.manual_seed(0)
    encoder = Conv4(1, hidden=8, num_classes=None, image_size=16).double()
    for m in encoder.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = momentum
    fast, plain = _train_copies(encoder)
    assert fast._encoder_call._cache[1] is not None  # it did take the fast path
    for (name, a), b in zip(fast.state_dict().items(), plain.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10, msg=name)
    assert int(fast.state_dict()["encoder.features.0.1.num_batches_tracked"]) == 3
    # and eval mode (running averages) gives the same embeddings
    x = torch.rand(5, 1, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(fast.eval().encoder(x), plain.eval().encoder(x), rtol=0,
                               atol=1e-10)


def test_fast_path_keeps_batch_norm_1d_and_falls_back_for_unknown_layers():
    torch.manual_seed(0)
    known = nn.Sequential(nn.Flatten(), nn.Linear(256, 8), nn.BatchNorm1d(8), nn.ReLU())
    fast, plain = _train_copies(known.double())
    assert fast._encoder_call._cache[1] is not None  # it did take the fast path
    for a, b in zip(fast.state_dict().values(), plain.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    unknown = nn.Sequential(nn.Flatten(), nn.Linear(256, 8), nn.Dropout(0.0))
    fast, plain = _train_copies(unknown.double())
    assert fast._encoder_call._cache[1] is None  # the module's own forward
    for a, b in zip(fast.state_dict().values(), plain.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_fast_must_be_a_bool():
    with pytest.raises(ValueError, match="fast must be True or False"):
        ProtoNet(nn.Flatten(), fast="yes")
