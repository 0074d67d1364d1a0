"""DANN: the gradient-reversal layer, the lambda schedule, the losses, training, the shift."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mlbook.transfer import (
    DomainAdversarialNet,
    GradientReversal,
    add_smooth_texture,
    dann_lambda,
    dann_losses,
    reverse_gradient,
    train_dann,
)


@pytest.mark.parametrize("scale", [0.0, 0.3, 1.0, 2.5])
def test_reverse_gradient_is_identity_forward_and_flips_the_gradient_exactly(scale):
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 3, dtype=torch.float64)
    y = reverse_gradient(x, scale)
    assert torch.equal(y, x)
    (y * w).sum().backward()
    assert torch.equal(x.grad, -scale * w)  # exact: one multiplication by -scale


def test_gradient_reversal_module_reverses_only_what_passes_through_it():
    torch.manual_seed(0)
    layer = nn.Linear(3, 2).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    plain = torch.autograd.grad(layer(x).sum(), layer.weight)[0]
    reversal = GradientReversal(0.5)
    reversed_ = torch.autograd.grad(reversal(layer(x)).sum(), layer.weight)[0]
    assert torch.allclose(reversed_, -0.5 * plain, rtol=0, atol=1e-15)


@pytest.mark.parametrize("bad", [-0.1, math.inf, math.nan])
def test_reverse_gradient_rejects_bad_scale(bad):
    with pytest.raises(ValueError, match="scale"):
        reverse_gradient(torch.zeros(2, requires_grad=True), bad)


def test_dann_lambda_schedule():
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    values = [dann_lambda(p / 10) for p in range(11)]
    assert values == sorted(values) and values[-1] < 1
    with pytest.raises(ValueError, match="progress_fraction"):
        dann_lambda(1.5)


def tiny_dann() -> DomainAdversarialNet:
    return DomainAdversarialNet(nn.Sequential(nn.Linear(4, 8), nn.ReLU()), nn.Linear(8, 3),
                                nn.Linear(8, 1))


def test_dann_losses_train_the_discriminator_and_reverse_into_the_features():
    torch.manual_seed(0)
    model = tiny_dann().double()
    xs, ys, xt = torch.randn(6, 4).double(), torch.randint(0, 3, (6,)), torch.randn(5, 4).double()
    model.reversal.scale = 0.7
    _, domain_loss, acc = dann_losses(model, xs, ys, xt)
    assert 0 <= acc <= 1
    feat_params = list(model.features.parameters())
    disc_params = list(model.discriminator.parameters())
    g_rev = torch.autograd.grad(domain_loss, feat_params + disc_params)
    # the same loss without the reversal layer: features' gradient is -1/0.7 times as large,
    # the discriminator's is unchanged
    feats = model.features(torch.cat([xs, xt]))
    target = torch.cat([torch.zeros(6), torch.ones(5)]).double()
    plain_loss = nn.functional.binary_cross_entropy_with_logits(
        model.discriminator(feats).squeeze(-1), target)
    g_plain = torch.autograd.grad(plain_loss, feat_params + disc_params)
    for a, b in zip(g_rev[:2], g_plain[:2], strict=True):
        assert torch.allclose(a, -0.7 * b, atol=1e-14)
    for a, b in zip(g_rev[2:], g_plain[2:], strict=True):
        assert torch.allclose(a, b, atol=1e-14)


def test_dann_losses_reject_mismatched_shapes():
    model = tiny_dann()
    with pytest.raises(ValueError, match="same shape"):
        dann_losses(model, torch.randn(2, 4), torch.zeros(2, dtype=torch.long), torch.randn(2, 5))
    with pytest.raises(ValueError, match="examples"):
        dann_losses(model, torch.randn(2, 4), torch.zeros(3, dtype=torch.long), torch.randn(2, 4))


def toy_run(gamma: float):
    torch.manual_seed(0)
    xs = torch.randn(200, 4)
    ys = (xs[:, 0] > 0).long()
    xt = torch.randn(200, 4) + torch.tensor([0.0, 3.0, 0.0, 0.0])  # shifted along a nuisance
    model = DomainAdversarialNet(nn.Sequential(nn.Linear(4, 16), nn.ReLU()), nn.Linear(16, 2),
                                 nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1)))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return train_dann(model, (xs, ys), xt, opt, steps=300, batch_size=32, log_every=50,
                      gamma=gamma)


def test_train_dann_logs_and_aligns_a_shifted_toy_domain():
    history = toy_run(gamma=10.0)
    assert history["step"] == [50, 100, 150, 200, 250, 300]
    assert history["lam"][0] < history["lam"][-1] <= 1
    assert history["label_loss"][-1] < history["label_loss"][0]
    # gamma = 0 keeps lambda at 0: no reversal, the discriminator separates the domains
    plain = toy_run(gamma=0.0)
    late = slice(3, None)  # the last 150 steps, when lambda is near 1
    plain_acc = sum(plain["domain_accuracy"][late]) / 3
    assert plain["lam"] == [0.0] * 6 and plain_acc > 0.9
    # with the reversal the features hide much of the shift from the discriminator
    assert sum(history["domain_accuracy"][late]) / 3 < plain_acc - 0.1


def test_train_dann_rejects_too_large_batch():
    with pytest.raises(ValueError, match="batch_size"):
        train_dann(tiny_dann(), (torch.randn(4, 4), torch.zeros(4, dtype=torch.long)),
                   torch.randn(3, 4), torch.optim.SGD(tiny_dann().parameters(), lr=0.1),
                   steps=1, batch_size=4)


def test_add_smooth_texture_shifts_within_range_and_is_seeded():
    images = torch.rand(6, 1, 8, 8)
    shifted = add_smooth_texture(images, amplitude=0.5, seed=3)
    assert shifted.shape == images.shape and shifted.min() >= 0 and shifted.max() <= 1
    assert torch.equal(shifted, add_smooth_texture(images, amplitude=0.5, seed=3))
    assert (shifted >= images).all() and (shifted > images).any()  # it only adds brightness
    assert torch.equal(add_smooth_texture(images, amplitude=0.0), images)
    with pytest.raises(ValueError, match="amplitude"):
        add_smooth_texture(images, amplitude=2.0)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        add_smooth_texture(torch.rand(8, 8))
