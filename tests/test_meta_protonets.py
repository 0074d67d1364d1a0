"""Prototypical Networks: prototypes, distances and loss against direct formulas."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mlbook.data import Episode, fixed_episodes
from mlbook.meta import ProtoNet, embed_classes, episode_scores, prototypes, squared_distances


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
