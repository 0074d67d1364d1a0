"""The regularised objective lam * L_source + (1 - lam) * L_target equals its formula."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mlbook.models import Conv4
from mlbook.transfer import L2SP, RegularisedObjective, replace_head


def pretrained_then_new_head() -> Conv4:
    model = Conv4(in_channels=1, hidden=4, num_classes=10, image_size=16)
    replace_head(model, 3)
    return model


def test_l2sp_is_half_alpha_squared_distance_plus_half_beta_head_norm():
    model = pretrained_then_new_head()
    w0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    penalty = L2SP(model, new=["head"], alpha=0.3, beta=0.7)
    # At w = w0 only the new head's decay remains: beta / 2 * ||w_new||^2.
    head_sq = model.head.weight.pow(2).sum() + model.head.bias.pow(2).sum()
    torch.testing.assert_close(penalty(model), 0.35 * head_sq)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    shared = sum(
        (p - w0[n]).pow(2).sum() for n, p in model.named_parameters() if not n.startswith("head.")
    )
    new = sum(p.pow(2).sum() for n, p in model.named_parameters() if n.startswith("head."))
    torch.testing.assert_close(penalty(model), 0.5 * 0.3 * shared + 0.5 * 0.7 * new)


def test_l2sp_gradient_pulls_towards_the_pretrained_weights():
    model = pretrained_then_new_head()
    penalty = L2SP(model, alpha=2.0)
    w0 = model.features[0][0].weight.detach().clone()
    with torch.no_grad():
        model.features[0][0].weight.add_(1.0)
    penalty(model).backward()
    # d/dw alpha/2 ||w - w0||^2 = alpha (w - w0) = 2 * 1
    torch.testing.assert_close(model.features[0][0].weight.grad, torch.full_like(w0, 2.0))
    assert model.head.weight.grad is None or torch.all(model.head.weight.grad == 0)


def test_source_head_with_soft_targets_is_lwf_distillation_on_the_target_batch():
    # Learning without Forgetting: the old head's logits on the *target* images, against the
    # original network's softened outputs on the same images (no source data involved).
    torch.manual_seed(0)
    temperature = 2.0
    recorded = torch.randn(6, 10)                    # original network, before fine-tuning
    old_head = recorded.clone().requires_grad_(True)  # the old head now, same target batch
    target_logits, target_y = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    objective = RegularisedObjective(0.5, "source_head")
    soft = (recorded / temperature).softmax(1)
    terms = objective.terms(target_logits, target_y, source_logits=old_head / temperature,
                            source_y=soft)
    expected = -(soft * (old_head / temperature).log_softmax(1)).sum(1).mean()
    torch.testing.assert_close(terms["source"], expected)
    # While the old head still gives its recorded outputs the distillation term is at its
    # minimum: zero gradient (it only pulls back once fine-tuning moves the shared layers).
    terms["source"].backward()
    torch.testing.assert_close(old_head.grad, torch.zeros_like(old_head), atol=1e-7, rtol=0)


@pytest.mark.parametrize("lam", [0.0, 0.25, 1.0])
def test_objective_with_l2sp_equals_formula(lam):
    model = pretrained_then_new_head()
    penalty = L2SP(model, alpha=0.1)
    with torch.no_grad():
        model.features[1][0].weight.mul_(1.5)
    x, y = torch.randn(6, 1, 16, 16), torch.tensor([0, 1, 2, 0, 1, 2])
    logits = model(x)
    objective = RegularisedObjective(lam, "l2sp", l2sp=penalty)
    terms = objective.terms(logits, y, model=model)
    expected = lam * penalty(model) + (1 - lam) * F.cross_entropy(logits, y)
    torch.testing.assert_close(terms["total"], expected)
    torch.testing.assert_close(objective(logits, y, model=model), expected)
    assert terms["source"].item() > 0


def test_objective_with_retained_source_head_equals_formula():
    torch.manual_seed(1)
    target_logits, target_y = torch.randn(5, 3), torch.randint(0, 3, (5,))
    source_logits, source_y = torch.randn(7, 10), torch.randint(0, 10, (7,))
    objective = RegularisedObjective(0.3, "source_head")
    got = objective(target_logits, target_y, source_logits=source_logits, source_y=source_y)
    expected = 0.3 * F.cross_entropy(source_logits, source_y) + 0.7 * F.cross_entropy(
        target_logits, target_y
    )
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("lam", [-0.1, 1.01, float("nan")])
def test_lambda_outside_unit_interval_is_an_error(lam):
    with pytest.raises(ValueError, match=r"lam .* must lie in \[0, 1\]"):
        RegularisedObjective(lam, "source_head")


def test_missing_pieces_are_errors():
    with pytest.raises(ValueError, match="source must be one of"):
        RegularisedObjective(0.5, "lwf")
    with pytest.raises(ValueError, match="needs the penalty"):
        RegularisedObjective(0.5, "l2sp")
    with pytest.raises(ValueError, match="source_logits"):
        RegularisedObjective(0.5, "source_head")(torch.randn(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="unknown layers"):
        L2SP(pretrained_then_new_head(), new=["classifier"])
    with pytest.raises(ValueError, match="alpha and beta"):
        L2SP(pretrained_then_new_head(), alpha=-1)
