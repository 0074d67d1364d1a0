"""Checkers for the transfer-learning exercises (``transfer_learning``, ``transfer_imagenet``)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import nn

from mlbook.exercises._checking import (
    ExerciseFailed,
    call,
    compare,
    exercise,
    generator,
    require,
)
from mlbook.exercises.protonets import CASES, episode_embeddings
from mlbook.meta import prototypes
from mlbook.transfer import L2SP, layerwise_param_groups, linear_probe

# --- transfer_learning -----------------------------------------------------------------------


@exercise("transfer_learning", "The prototype head: initialising a new head from the support set",
          10, "the fine-tuning recipe (step 2); the prototype-head exercise above")
def check_prototype_head(fn: Callable) -> int:
    """Check ``fn(support_z [S, D], support_y [S], n_way) -> (weight [N, D], bias [N])``.

    The head of the fine-tuning recipe: ``weight[c] = 2 mu_c`` and ``bias[c] = -||mu_c||^2``
    with ``mu_c`` the mean support embedding of class ``c``, so that the logits are
    ``-||z - mu_c||^2`` up to a term that is the same for every class.
    """
    z = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1])
    cases = [(z, y, 2, "class 0 at (1, 0) and (3, 0), class 1 at (0, 1): mu = (2, 0) and "
                       "(0, 1), so weight = [[4, 0], [0, 2]] and bias = [-4, -1]")]
    cases += [(*episode_embeddings(seed, n, k, 1)[:2], n, case) for seed, n, k, _, case in CASES]
    for sz, sy, n_way, case in cases:
        out = call(fn, sz.clone(), sy.clone(), n_way, what="your prototype_head")
        require(isinstance(out, tuple | list) and len(out) == 2,
                f"prototype_head should return a pair (weight, bias), got {type(out).__name__}")
        weight, bias = out
        mu = prototypes(sz, sy, n_way)
        sq = mu.pow(2).sum(1)
        compare(weight, 2 * mu, "the weight", {
            "the weight is mu_c; it should be 2 mu_c (expand ||z - mu_c||^2)": mu,
            "the weight is -2 mu_c: the sign is flipped": -2 * mu}, case)
        compare(bias, -sq, "the bias", {
            "the bias is +||mu_c||^2; it should be -||mu_c||^2": sq,
            "the bias is -||mu_c||, the norm; it should be its square": -sq.sqrt(),
            "the bias is -||mu_c||^2 / 2, which goes with weight mu_c, not 2 mu_c": -sq / 2,
        }, case)
    return len(cases)


class _Net(nn.Module):
    """A small pretrained-looking network: ``body`` (shared) and ``head`` (new)."""

    def __init__(self, seed: int, with_head: bool = True) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5))
        self.head = nn.Linear(5, 3) if with_head else nn.Identity()
        self.double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@exercise("transfer_learning", "The L2-SP penalty", 15,
          "the regularised objective; dicts of parameters (model.named_parameters())")
def check_l2sp_penalty(fn: Callable) -> int:
    """Check ``fn(model, reference, new, alpha, beta) -> scalar tensor``.

    ``reference`` maps every parameter name of ``model`` to its pretrained value ``w^0``;
    ``new`` lists the names of the new modules (e.g. ``["head"]``). The penalty is
    ``alpha / 2 * ||w_S - w_S^0||^2 + beta / 2 * ||w_new||^2``: shared parameters are pulled
    towards their pretrained values, new ones towards zero. It must be differentiable with
    respect to the model's parameters. Compared with :class:`mlbook.transfer.L2SP`.
    """
    cases = [(0, 1.0, 0.0, True, "alpha = 1, beta = 0"),
             (1, 0.1, 0.01, True, "alpha = 0.1, beta = 0.01"),
             (2, 0.5, 0.3, False, "a model without new modules: new = []")]
    for seed, alpha, beta, with_head, case in cases:
        model = _Net(seed, with_head)
        new = ["head"] if with_head else []
        pretrained = copy.deepcopy(model)
        reference = {n: p.detach().clone() for n, p in model.named_parameters()}
        penalty = L2SP(pretrained, new=new, alpha=alpha, beta=beta)
        g = generator(seed)
        with torch.no_grad():
            for p in model.parameters():  # as if fine-tuning had moved every weight
                p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        received = call(fn, model, dict(reference), list(new), alpha, beta,
                        what="your l2sp_penalty")
        expected = penalty(model)
        with torch.no_grad():
            params = dict(model.named_parameters())
            is_new = {n: any(n.startswith(m + ".") for m in new) for n in params}
            shared = sum((params[n] - reference[n]).pow(2).sum() for n in params if not is_new[n])
            head_to_w0 = sum(((params[n] - reference[n]).pow(2).sum() for n in params
                              if is_new[n]), torch.tensor(0.0, dtype=torch.float64))
            head_sq = sum((params[n].pow(2).sum() for n in params if is_new[n]),
                          torch.tensor(0.0, dtype=torch.float64))
            shared_sq = sum(params[n].pow(2).sum() for n in params if not is_new[n])
        mistakes = {
            "the factor 1/2 is missing: alpha/2 ||w_S - w_S^0||^2 + beta/2 ||w_new||^2":
                2 * expected.detach(),
            "the shared weights are pulled towards zero (weight decay), not towards their "
            "pretrained values w^0": 0.5 * alpha * shared_sq + 0.5 * beta * head_sq,
            "the new head is pulled towards its initial values too; it has no pretrained "
            "values, so it gets the plain decay beta/2 ||w_new||^2":
                0.5 * alpha * shared + 0.5 * beta * head_to_w0,
            "the new head gets the shared pull alpha, not beta":
                0.5 * alpha * (shared + head_sq),
        }
        compare(received, expected, "the penalty", mistakes, case)
        require(isinstance(received, torch.Tensor) and received.requires_grad,
                f"the penalty ({case}) is not differentiable with respect to the model's "
                "parameters: compute it from model.named_parameters() with torch operations "
                "(no .item(), .detach() or NumPy), so that it can be added to the loss")
        grads = torch.autograd.grad(received, list(model.parameters()), allow_unused=True)
        want = torch.autograd.grad(penalty(model), list(model.parameters()), allow_unused=True)
        for (name, p), got, ref in zip(model.named_parameters(), grads, want, strict=True):
            compare(torch.zeros_like(p) if got is None else got,
                    torch.zeros_like(p) if ref is None else ref,
                    f"the gradient of the penalty with respect to {name!r}", case=case)
    # Closed form: one shared weight moved from 1 to 3 and one head weight 2, alpha = beta = 1:
    # 1/2 * (3 - 1)^2 + 1/2 * 2^2 = 4.
    net = nn.Sequential()
    net.add_module("body", nn.Linear(1, 1, bias=False))
    net.add_module("head", nn.Linear(1, 1, bias=False))
    net.double()
    with torch.no_grad():
        net.body.weight.fill_(1.0)
        net.head.weight.fill_(5.0)
    reference = {n: p.detach().clone() for n, p in net.named_parameters()}
    with torch.no_grad():
        net.body.weight.fill_(3.0)
        net.head.weight.fill_(2.0)
    compare(call(fn, net, reference, ["head"], 1.0, 1.0, what="your l2sp_penalty"),
            torch.tensor(4.0, dtype=torch.float64), "the penalty",
            case="one shared weight moved from 1 to 3, a head weight 2, alpha = beta = 1: "
                 "(3 - 1)^2 / 2 + 2^2 / 2 = 4")
    return len(cases) + 1


# --- transfer_imagenet -----------------------------------------------------------------------

def _probe_data(seed: int, n_way: int, per_class: int, dim: int, spread: float = 1.0):
    g = generator(seed)
    centres = torch.randn(n_way, dim, generator=g)
    y = torch.arange(n_way).repeat_interleave(per_class)
    x = centres[y] + spread * torch.randn(len(y), dim, generator=g)
    return x, y


def _arcs(seed: int, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0 near the top of the unit circle, class 1 on both sides below it, at radii from
    0.05 to 20: separable by direction (after normalising), not by position."""
    g = generator(seed)
    top = math.pi / 2 + 0.2 * (2 * torch.rand(per_class, generator=g) - 1)
    sides = torch.rand(per_class, generator=g) * 0.9
    sides = torch.where(torch.rand(per_class, generator=g) < 0.5, sides, math.pi - sides)
    angle = torch.cat([top, sides])
    radius = torch.exp(torch.empty(2 * per_class).uniform_(math.log(0.05), math.log(20),
                                                           generator=g))
    x = torch.stack([angle.cos(), angle.sin()], 1) * radius[:, None]
    return x, torch.arange(2).repeat_interleave(per_class)


def _reference_accuracy(train_x, train_y, test_x, test_y) -> float:
    return float(linear_probe().fit(train_x, train_y).score(test_x, test_y))


@exercise("transfer_imagenet", "A linear probe with scikit-learn", 15,
          "scikit-learn's LogisticRegression; the feature-extraction section")
def check_linear_probe(fn: Callable) -> int:
    """Check ``fn(train_features, train_labels, test_features, test_labels) -> accuracy``.

    The probe divides each feature vector by its Euclidean norm, fits
    ``LogisticRegression(C=10, max_iter=1000)`` on the training features only, and returns
    the accuracy on the test features as a fraction in ``[0, 1]`` (a Python float), as
    :func:`mlbook.transfer.linear_probe` does. Features come as float32 torch tensors
    ``[M, D]``, labels as int64 ``[M]``.
    """
    cases = []
    x, y = _probe_data(0, 2, 20, 16)
    cases.append((x[::2], y[::2], x[1::2], y[1::2], "2 classes, 10 training examples each"))
    x, y = _probe_data(1, 5, 12, 32, spread=1.5)
    third = torch.arange(len(y)) % 3 == 0
    cases.append((x[third], y[third], x[~third], y[~third], "5 classes, overlapping clusters"))
    x, y = _probe_data(2, 5, 6, 8, spread=0.3)
    one = torch.arange(len(y)) % 6 == 0
    cases.append((x[one], y[one], x[~one], y[~one], "5-way one-shot"))
    # Test labels are the training labels shifted by one: a correct probe gets everything
    # wrong, and one that saw the test labels gets everything right.
    x, y = _probe_data(3, 4, 10, 8, spread=0.2)
    cases.append((x[::2], y[::2], x[1::2], (y[1::2] + 1) % 4,
                  "test labels that contradict the training labels"))
    xa, ya = _arcs(4, 60)
    cases.append((xa[::2], ya[::2], xa[1::2], ya[1::2],
                  "classes told apart by the direction of the features, not their size"))
    for train_x, train_y, test_x, test_y, case in cases:
        args = (train_x.clone(), train_y.clone(), test_x.clone(), test_y.clone())
        received = call(fn, *args, what="your probe")
        if isinstance(received, torch.Tensor) and received.numel() == 1:
            received = received.item()
        require(isinstance(received, float | int) and not isinstance(received, bool),
                f"the probe should return the accuracy as a number, got "
                f"{type(received).__name__}")
        expected = _reference_accuracy(*args)
        on_test = _reference_accuracy(test_x, test_y, test_x, test_y)
        raw = float(linear_probe(normalise=False).fit(train_x, train_y).score(test_x, test_y))
        # One prediction's worth of slack: another solver or float32 may flip a borderline one.
        slack = 1.0 / len(test_y) + 1e-9
        if abs(received - 100 * expected) < 100 * slack and abs(received - expected) > slack:
            raise ExerciseFailed(f"the accuracy ({case}) is in percent ({received:.1f}); "
                                 "return a fraction in [0, 1]")
        if abs(received - on_test) < slack < abs(received - expected):
            raise ExerciseFailed(f"the probe ({case}) scores as if it was fitted on the test "
                                 "set: fit it on the training features and labels only")
        if abs(received - raw) < slack < abs(received - expected):
            raise ExerciseFailed(f"the probe ({case}) scores like one on unnormalised "
                                 "features: divide each feature vector by its norm first")
        if abs(received - expected) > slack:
            raise ExerciseFailed(f"the accuracy ({case}) is {received:.3f}, expected "
                                 f"{expected:.3f} within {slack:.3f} (C = 10, L2-normalised "
                                 "features, fitted on the training set)")
    return len(cases)


class _Blocks(nn.Module):
    def __init__(self, seed: int, frozen: tuple[str, ...] = ()) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Linear(3, 4)
        self.act = nn.ReLU()  # no parameters: no group
        self.body = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
        self.top = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)
        for name in frozen:
            for p in self.get_submodule(name).parameters():
                p.requires_grad_(False)
        self.body[1].bias.requires_grad_(False)  # a frozen tensor inside a trainable block


@exercise("transfer_imagenet", "Discriminative learning rates: one parameter group per block",
          15, "torch.optim parameter groups; requires_grad")
def check_param_groups(fn: Callable) -> int:
    """Check ``fn(model, base_lr, decay) -> list of {"params": [...], "lr": float}``.

    One group per top-level child of ``model`` (``model.named_children()``, in order) that
    has trainable parameters (``requires_grad``); only trainable parameters go in. The last
    block (the head) gets ``base_lr`` and block ``i`` of ``L`` gets
    ``base_lr * decay ** (L - 1 - i)``. Compared with
    :func:`mlbook.transfer.layerwise_param_groups`.
    """
    cases = [(0, 1e-3, 0.5, (), "four blocks, decay 0.5"),
             (1, 1e-2, 0.1, ("stem",), "the stem frozen, decay 0.1"),
             (2, 3e-4, 1.0, ("stem", "body"), "only top and head trainable, decay 1")]
    for seed, base_lr, decay, frozen, case in cases:
        model = _Blocks(seed, frozen)
        received = call(fn, model, base_lr, decay, what="your param_groups")
        expected = layerwise_param_groups(model, base_lr, decay)
        require(isinstance(received, list | tuple) and all(isinstance(g, dict) for g in received),
                f"param_groups ({case}) should return a list of dicts, got "
                f"{type(received).__name__}")
        for group in received:
            require("params" in group and "lr" in group,
                    f"every group ({case}) needs the keys 'params' and 'lr', got {sorted(group)}")
        everything = [id(p) for g in received for p in g["params"]]
        frozen_in = [n for n, p in model.named_parameters()
                     if not p.requires_grad and id(p) in everything]
        require(not frozen_in, f"frozen parameters ({case}) are in the groups: {frozen_in}; "
                "leave out every parameter with requires_grad=False")
        require(len(everything) == len(set(everything)),
                f"a parameter ({case}) is in more than one group")
        require(len(received) == len(expected),
                f"there are {len(received)} groups ({case}), expected {len(expected)}: one per "
                "top-level block with trainable parameters, input to output")
        for i, (got, want) in enumerate(zip(received, expected, strict=True)):
            name = want["name"]
            require({id(p) for p in got["params"]} == {id(p) for p in want["params"]},
                    f"group {i} ({case}) should hold the trainable parameters of block "
                    f"{name!r}, in block order")
        lrs = torch.tensor([float(g["lr"]) for g in received], dtype=torch.float64)
        want_lrs = torch.tensor([g["lr"] for g in expected], dtype=torch.float64)
        compare(lrs, want_lrs, "the learning rates", {
            "the rates are reversed: the LAST block (the head) gets base_lr and blocks "
            "towards the input get less": want_lrs.flip(0),
            "the exponent is off by one: the head gets base_lr, i.e. decay ** (L - 1 - i)":
                want_lrs * decay,
        } if decay != 1 else {}, case, rtol=1e-9, atol=0.0)
    return len(cases)
