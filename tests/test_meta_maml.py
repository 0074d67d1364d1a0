"""MAML's meta-gradient against mathematics: finite differences, a quadratic, the FO formula."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mlbook.data import Episode
from mlbook.meta import MAML, functional_forward, inner_update
from mlbook.meta._fast.interpreter import Interpreter, UnsupportedModel
from mlbook.models import Conv4


def tiny_bn_net() -> nn.Module:
    """conv -> BN (batch statistics) -> ReLU -> pool -> linear, on 1x4x4 inputs, 3 classes."""
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.BatchNorm2d(3, track_running_stats=False),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(12, 3),
    )


def tiny_episode(num_tasks=2, ways=3, shots=2, queries=2, side=4, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    sx = torch.randn(num_tasks, ways * shots, 1, side, side, generator=g, dtype=dtype)
    qx = torch.randn(num_tasks, ways * queries, 1, side, side, generator=g, dtype=dtype)
    sy = torch.arange(ways).repeat_interleave(shots).expand(num_tasks, -1).contiguous()
    qy = torch.arange(ways).repeat_interleave(queries).expand(num_tasks, -1).contiguous()
    return Episode(sx, sy, qx, qy)


def flat_grad(learner: MAML) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in learner.meta_parameters()])


def directional_check(learner: MAML, episode, analytic: torch.Tensor, directions=6, eps=1e-6):
    """Compare ``analytic . v`` with central differences of the meta-loss along random ``v``.

    Random directions (plus the steepest one, ``v = analytic``) test every component of the
    gradient with a few loss evaluations instead of two per coordinate.
    """
    g = torch.Generator().manual_seed(123)
    n = analytic.numel()
    vs = [torch.randn(n, generator=g, dtype=torch.float64) for _ in range(directions)]
    vs.append(analytic / analytic.norm())
    params = learner.meta_parameters()
    base = [p.detach().clone() for p in params]

    def loss_at(v: torch.Tensor, scale: float) -> float:
        with torch.no_grad():
            offset = 0
            for p, b in zip(params, base, strict=True):
                p.copy_(b + scale * v[offset:offset + p.numel()].view_as(p))
                offset += p.numel()
            value = learner.meta_loss(episode)[0].item()
            for p, b in zip(params, base, strict=True):
                p.copy_(b)
        return value

    for v in vs:
        numeric = (loss_at(v, eps) - loss_at(v, -eps)) / (2 * eps)
        exact = float(analytic @ v)
        assert abs(numeric - exact) <= 1e-6 * max(1.0, abs(exact)), (numeric, exact)


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("fast", [False, True])
def test_meta_gradient_matches_finite_differences_with_batch_norm(steps, fast):
    torch.manual_seed(1)
    learner = MAML(tiny_bn_net().double(), inner_lr=0.3, inner_steps=steps, fast=fast, threads=2)
    episode = tiny_episode()
    loss, acc = learner.meta_loss(episode)
    loss.backward()
    analytic = flat_grad(learner)
    # the score is the mean query accuracy after adaptation, recomputed here task by task
    with torch.no_grad():
        hits = [(learner.predict(learner.adapt(episode.support_x[t], episode.support_y[t],
                                               first_order=True), episode.query_x[t])
                 .argmax(1) == episode.query_y[t]).double().mean() for t in range(2)]
    assert acc == pytest.approx(torch.stack(hits).mean().item())
    assert analytic.abs().max() > 1e-3  # a real, non-trivial gradient
    directional_check(learner, episode, analytic)


def test_meta_sgd_learning_rates_match_finite_differences():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    learner = MAML(net, inner_lr=0.2, inner_steps=2, learn_inner_lr=True, fast=False)
    g = torch.Generator().manual_seed(0)
    episode = Episode(torch.randn(2, 4, 3, generator=g, dtype=torch.float64),
                      torch.tensor([[0, 1, 0, 1]] * 2),
                      torch.randn(2, 6, 3, generator=g, dtype=torch.float64),
                      torch.tensor([[0, 1, 0, 1, 0, 1]] * 2))
    learner.meta_loss(episode)[0].backward()
    assert all(p.grad is not None for p in learner.inner_lrs.values())
    directional_check(learner, episode, flat_grad(learner))


def quadratic_setup(n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(n, n, generator=g, dtype=torch.float64)
    a = m @ m.T / n + torch.eye(n, dtype=torch.float64)  # the Hessian of L_tr (symmetric)
    c = torch.randn(n, n, generator=g, dtype=torch.float64)  # L_te need not be symmetric
    b, d = (torch.randn(n, generator=g, dtype=torch.float64) for _ in range(2))
    theta = torch.randn(n, generator=g, dtype=torch.float64, requires_grad=True)
    return a, b, c, d, theta


def quadratic_loss(theta: torch.Tensor, coefficients) -> torch.Tensor:
    """0.5 theta^T M theta - v^T theta for ``coefficients = (M, v)``."""
    m, v = coefficients
    return 0.5 * theta @ m @ theta - v @ theta


@pytest.mark.parametrize("steps", [1, 2])
def test_second_order_matches_quadratic_formula(steps):
    a, b, c, d, theta = quadratic_setup()
    alpha = 0.1
    fmodel = lambda params, x: params["theta"]  # noqa: E731 - the "network" is theta itself
    phi = inner_update(fmodel, {"theta": theta}, None, (a, b), quadratic_loss, alpha, steps)
    (grad,) = torch.autograd.grad(quadratic_loss(phi["theta"], (c, d)), theta)

    # phi_{j+1} = (I - alpha A) phi_j + alpha b, so d phi / d theta = (I - alpha A)^steps and
    # the meta-gradient is ((I - alpha A)^steps)^T grad L_te(phi),
    # with grad L_te = 0.5 (C + C^T) phi - d.
    jac = torch.linalg.matrix_power(torch.eye(5, dtype=torch.float64) - alpha * a, steps)
    phi_ref = theta.detach()
    for _ in range(steps):
        phi_ref = phi_ref - alpha * (a @ phi_ref - b)
    expected = jac.T @ (0.5 * (c + c.T) @ phi_ref - d)
    torch.testing.assert_close(phi["theta"].detach(), phi_ref, rtol=0, atol=1e-12)
    assert (grad - expected).abs().max() < 1e-10
    # and it is not the first-order answer (the test would catch a detached inner gradient)
    assert (grad - (0.5 * (c + c.T) @ phi_ref - d)).abs().max() > 1e-3


def test_first_order_is_query_gradient_at_adapted_weights():
    torch.manual_seed(3)
    net = tiny_bn_net().double()
    learner = MAML(net, inner_lr=0.3, inner_steps=2, first_order=True, fast=True, threads=2)
    episode = tiny_episode(num_tasks=3)
    learner.meta_loss(episode)[0].backward()
    got = flat_grad(learner)

    f = functional_forward(net)
    expected = torch.zeros_like(got)
    for t in range(3):
        phi = {n: p.detach().clone().requires_grad_() for n, p in net.named_parameters()}
        for _ in range(2):  # two plain SGD steps on the support set, no graph
            loss = F.cross_entropy(f(phi, episode.support_x[t]), episode.support_y[t])
            grads = torch.autograd.grad(loss, list(phi.values()))
            phi = {n: (p - 0.3 * g).detach().requires_grad_()
                   for (n, p), g in zip(phi.items(), grads, strict=True)}
        qloss = F.cross_entropy(f(phi, episode.query_x[t]), episode.query_y[t])
        qgrads = torch.autograd.grad(qloss, list(phi.values()))
        expected += torch.cat([g.reshape(-1) for g in qgrads]) / 3
    assert (got - expected).abs().max() < 1e-12


def reference_meta_gradient(model, episode, alpha, steps):
    """The textbook loop: functional_call + autograd.grad(create_graph=True), per task."""
    params = dict(model.named_parameters())
    losses = []
    for t in range(episode.support_x.shape[0]):
        phi = params
        for _ in range(steps):
            out = torch.func.functional_call(model, phi, (episode.support_x[t],))
            grads = torch.autograd.grad(F.cross_entropy(out, episode.support_y[t]),
                                        list(phi.values()), create_graph=True)
            phi = {n: p - alpha * g for (n, p), g in zip(phi.items(), grads, strict=True)}
        out = torch.func.functional_call(model, phi, (episode.query_x[t],))
        losses.append(F.cross_entropy(out, episode.query_y[t]))
    loss = torch.stack(losses).mean()
    return loss.detach(), torch.autograd.grad(loss, list(params.values()))


def omniglot_like_episode(num_tasks=4, ways=5, queries=3, dtype=torch.float64):
    """5-way 1-shot tasks of 1x16x16 images (the smallest side Conv4 takes, to stay fast)."""
    return tiny_episode(num_tasks, ways, 1, queries, side=16, dtype=dtype, seed=5)


@pytest.mark.parametrize("steps", [1, 2])
def test_fast_path_equals_plain_loop_float64(steps):
    torch.manual_seed(4)
    model = Conv4(1, hidden=8, num_classes=5, track_running_stats=False, image_size=16).double()
    episode = omniglot_like_episode()
    ref_loss, ref_grads = reference_meta_gradient(model, episode, 0.4, steps)
    for fast in (True, False):
        learner = MAML(model, inner_lr=0.4, inner_steps=steps, fast=fast, threads=2)
        model.zero_grad()
        loss, _ = learner.meta_loss(episode)
        loss.backward()
        assert abs(loss.item() - ref_loss.item()) < 1e-12
        worst = max((p.grad - g).abs().max().item()
                    for p, g in zip(model.parameters(), ref_grads, strict=True))
        assert worst < 1e-10, (fast, worst)


def test_fast_path_with_threads_float32():
    torch.manual_seed(5)
    model = Conv4(1, hidden=8, num_classes=5, track_running_stats=False, image_size=16)
    episode = omniglot_like_episode(num_tasks=6, dtype=torch.float32)
    _, ref_grads = reference_meta_gradient(model, episode, 0.4, 1)
    learner = MAML(model, inner_lr=0.4, threads=2)
    model.zero_grad()
    before = torch.get_num_threads()
    learner.meta_loss(episode)[0].backward()
    for p, g in zip(model.parameters(), ref_grads, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6)
    assert torch.get_num_threads() == before  # the task threads restore the caller's count


def test_anil_adapts_only_the_head():
    model = Conv4(1, hidden=4, num_classes=5, track_running_stats=False, image_size=16).double()
    learner = MAML(model, inner_lr=0.4, inner_steps=2, adapt="head")
    episode = omniglot_like_episode(num_tasks=2)
    phi = learner.adapt(episode.support_x[0], episode.support_y[0])
    theta = learner.params()
    assert learner.adapt_names == ["head.weight", "head.bias"]
    for name in theta:
        if name.startswith("head."):
            assert not torch.equal(phi[name], theta[name]), name
        else:
            assert phi[name] is theta[name], name
    # the body is still meta-trained (through the head's inner steps and the query loss)
    learner.meta_loss(episode)[0].backward()
    assert model.features[0][0].weight.grad.abs().sum() > 0


def test_meta_sgd_rates_get_gradients_and_start_at_inner_lr():
    model = Conv4(1, hidden=4, num_classes=5, track_running_stats=False, image_size=16)
    learner = MAML(model, inner_lr=0.1, learn_inner_lr=True)
    assert len(learner.inner_lrs) == len(list(model.parameters()))
    assert all(torch.all(r == 0.1) for r in learner.inner_lrs.values())
    learner.meta_loss(omniglot_like_episode(num_tasks=2, dtype=torch.float32))[0].backward()
    # A conv bias before batch norm changes nothing (batch norm removes it): its gradient and
    # so its rate's gradient are zero in exact arithmetic. Every other rate learns.
    zero = {n for n in learner.inner_lrs if n.startswith("features") and n.endswith("0__bias")}
    assert len(zero) == 4
    grads = {n: r.grad for n, r in learner.inner_lrs.items()}
    assert all(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n not in zero)
    largest = max(g.abs().max() for g in grads.values() if g is not None)
    assert all(g is None or g.abs().max() < 1e-6 * largest for n, g in grads.items() if n in zero)


def sinusoid_mlp_and_episode(model_seed: int, data_seed: int, num_tasks: int, phase: float = 0.0):
    """Finn et al.'s 1-40-40-1 regression MLP and ``num_tasks`` sinusoid tasks (10 + 10
    points each), in float64."""
    torch.manual_seed(model_seed)
    mlp = nn.Sequential(nn.Linear(1, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU(),
                        nn.Linear(40, 1)).double()
    g = torch.Generator().manual_seed(data_seed)
    x = torch.rand(num_tasks, 20, 1, generator=g, dtype=torch.float64) * 10 - 5
    y = torch.sin(x - phase) * torch.rand(num_tasks, 1, 1, generator=g, dtype=torch.float64) * 5
    return mlp, Episode(x[:, :10], y[:, :10], x[:, 10:], y[:, 10:])


def test_regression_fast_equals_plain_and_scores_mse():
    mlp, episode = sinusoid_mlp_and_episode(model_seed=6, data_seed=0, num_tasks=5)
    grads = []
    for fast in (False, True):
        learner = MAML(mlp, inner_lr=0.01, loss_fn=F.mse_loss, fast=fast, threads=2)
        mlp.zero_grad()
        loss, mse = learner.meta_loss(episode)
        loss.backward()
        # The score of a regression batch is the query MSE after adaptation: here the loss.
        assert mse == pytest.approx(loss.item(), rel=1e-12)
        per_task = learner.task_scores(episode)
        assert per_task.shape == (5,) and per_task.mean().item() == pytest.approx(mse, rel=1e-6)
        grads.append(torch.cat([p.grad.reshape(-1) for p in mlp.parameters()]))
    assert (grads[0] - grads[1]).abs().max() < 1e-10


def test_task_scores_score_tasks_and_use_more_steps():
    model = Conv4(1, hidden=8, num_classes=5, track_running_stats=False, image_size=16)
    learner = MAML(model, inner_lr=0.4)
    episode = omniglot_like_episode(num_tasks=3, dtype=torch.float32)
    one, many = learner.task_scores(episode), learner.task_scores(episode, steps=5)
    # Accuracies of 15 queries: multiples of 1/15, recomputed here from the adapted weights.
    for t in range(3):
        phi = learner.adapt(episode.support_x[t], episode.support_y[t], 1)
        acc = (learner.predict(phi, episode.query_x[t]).argmax(1) == episode.query_y[t])
        assert one[t].item() == pytest.approx(acc.float().mean().item())
    # on its own support set (as query), 5 steps fit better than 1
    on_support = Episode(episode.support_x, episode.support_y, episode.support_x, episode.support_y)
    fit5, fit1 = learner.task_scores(on_support, 5), learner.task_scores(on_support, 1)
    assert fit5.mean() > fit1.mean()
    assert many.shape == (3,)
    assert all(p.grad is None for p in model.parameters())  # evaluation leaves no gradients


def test_functional_forward_matches_module():
    conv = Conv4(1, hidden=8, num_classes=5, track_running_stats=False, image_size=16).train()
    x = torch.randn(7, 1, 16, 16)
    for f in (functional_forward(conv), Interpreter(conv, layout=False)):
        torch.testing.assert_close(f(dict(conv.named_parameters()), x), conv(x), rtol=0, atol=0)

    class Odd(nn.Module):  # not a Sequential: the readable path runs it, the fast one refuses
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, x):
            return self.lin(x).tanh()

    odd = Odd()
    g = functional_forward(odd)
    x = torch.randn(4, 3)
    torch.testing.assert_close(g(dict(odd.named_parameters()), x), odd(x))
    with pytest.raises(UnsupportedModel, match="fast=False"):
        functional_forward(odd, fast=True)
    with pytest.raises(ValueError, match="Odd.*fast=False"):
        MAML(odd)
    MAML(odd, fast=False)  # the readable path takes any module


def second_order_probe(f, params, x, y):
    """Loss, gradient and a Hessian-vector product of cross-entropy at ``params``."""
    names = list(params)
    loss = F.cross_entropy(f(params, x), y)
    grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=True)
    g = torch.Generator().manual_seed(9)
    vs = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in grads]
    dot = sum((gr * v).sum() for gr, v in zip(grads, vs, strict=True))
    hvp = torch.autograd.grad(dot, [params[n] for n in names])
    return [loss.detach(), *(gr.detach() for gr in grads), *hvp]


@pytest.mark.parametrize("in_channels", [1, 3, 80])
def test_fast_layout_is_the_same_function_to_second_order(in_channels):
    """Channels-last, pool-before-ReLU and the fused batch norm + max-pool change no derivative
    (float64)."""
    torch.manual_seed(6)
    conv = Conv4(in_channels, hidden=8, num_classes=5, track_running_stats=False,
                 image_size=16).double()
    params = dict(conv.named_parameters())
    x = torch.randn(10, in_channels, 16, 16, dtype=torch.float64) + 3.0
    y = torch.arange(5).repeat(2)
    fast = functional_forward(conv, fast=True)
    assert [op.kind for op in fast._fast_ops[:2]] == ["conv_batch_norm_max_pool", "relu"]

    def module_forward(p, inputs):
        return torch.func.functional_call(conv, p, (inputs,))

    for got, want in zip(second_order_probe(fast, params, x, y),
                         second_order_probe(module_forward, params, x, y), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_fast_layout_float32_gradients_stay_accurate():
    """The fast layout's float32 gradients are about as accurate as the NCHW path's.

    Measured on inputs in [1, 2]: when the channels-last batch norm ran without centring its
    input, the fast layout's float32 gradients were about 200x further from float64 than the
    NCHW path's (1.9e-3 against 8.8e-6). The fused batch norm + max-pool computes its
    statistics in two passes (mean, then squared deviations).
    """
    torch.manual_seed(7)
    conv = Conv4(1, hidden=16, num_classes=5, track_running_stats=False, image_size=28)
    x = torch.rand(75, 1, 28, 28) + 1.0
    y = torch.arange(5).repeat(15)
    # Conv biases before a batch norm have a zero gradient: only rounding, nothing to compare.
    names = [n for n, _ in conv.named_parameters()
             if not (n.startswith("features") and n.endswith(".0.bias"))]

    def gradients(f) -> dict[str, torch.Tensor]:
        params = dict(conv.named_parameters())
        loss = F.cross_entropy(f(params, x.to(conv.head.weight.dtype)), y)
        return dict(zip(params, torch.autograd.grad(loss, list(params.values())), strict=True))

    exact = gradients(functional_forward(conv.double()))
    conv.float()

    def error(fast_layout: bool) -> float:
        got = gradients(Interpreter(conv, layout=fast_layout))
        return max(((got[n].double() - exact[n]).norm() / exact[n].norm()).item()
                   for n in names)

    assert error(True) < 3 * error(False) + 1e-6


def test_bad_input_raises_clear_errors():
    model = Conv4(1, hidden=4, num_classes=5, track_running_stats=False, image_size=16)
    with pytest.raises(ValueError, match="inner_steps"):
        MAML(model, inner_steps=0)
    with pytest.raises(ValueError, match="adapt must be"):
        MAML(model, adapt="body")
    with pytest.raises(ValueError, match="inner_lr"):
        MAML(model, inner_lr=-0.1)
    with pytest.raises(ValueError, match="track_running_stats=False"):
        MAML(Conv4(1, hidden=4, num_classes=5, image_size=16))
    with pytest.raises(ValueError, match="head"):
        MAML(nn.Sequential(nn.Linear(2, 2)), adapt="head")
    learner = MAML(model)
    ep = omniglot_like_episode(num_tasks=2, dtype=torch.float32)
    with pytest.raises(ValueError, match="same number"):
        learner.meta_loss(Episode(ep.support_x, ep.support_y[:1], ep.query_x, ep.query_y))
    with pytest.raises(ValueError, match="examples per task"):
        learner.meta_loss(Episode(ep.support_x, ep.support_y[:, :2], ep.query_x, ep.query_y))
    with pytest.raises(ValueError, match="task dimension"):
        learner.meta_loss(Episode(ep.support_x[0], ep.support_y[0], ep.query_x[0], ep.query_y[0]))
    with pytest.raises(TypeError, match="tensor"):
        learner.meta_loss((1, 2, 3, 4))
    with pytest.raises(ValueError, match="steps"):
        learner.task_scores(ep, steps=0)
    with pytest.raises(ValueError, match="adapt_names"):
        inner_update(learner.forward_fn, learner.params(), ep.support_x[0], ep.support_y[0],
                     F.cross_entropy, 0.4, adapt_names=["nope"])


@pytest.mark.parametrize("first_order", [False, True])
def test_vectorized_path_equals_task_loop_for_sinusoid_mlp(first_order):
    mlp, episode = sinusoid_mlp_and_episode(model_seed=7, data_seed=1, num_tasks=6, phase=1.0)
    grads, losses = [], []
    for vectorize in (False, True):
        learner = MAML(mlp, inner_lr=0.01, inner_steps=2, first_order=first_order,
                       loss_fn=F.mse_loss, fast=False, vectorize=vectorize)
        mlp.zero_grad()
        loss, mse = learner.meta_loss(episode)
        loss.backward()
        assert mse == pytest.approx(loss.item(), rel=1e-12)
        losses.append(loss.item())
        grads.append(torch.cat([p.grad.reshape(-1) for p in mlp.parameters()]))
    assert abs(losses[0] - losses[1]) < 1e-12
    assert (grads[0] - grads[1]).abs().max() < 1e-10
    assert grads[0].abs().max() > 1e-3


def test_vectorize_is_refused_with_batch_norm():
    with pytest.raises(ValueError, match="batch norm"):
        MAML(tiny_bn_net(), vectorize=True)


def test_protomaml_head_starts_as_prototypical_networks():
    """Before any inner step, ProtoMAML's head gives ProtoNets' class probabilities."""
    from mlbook.meta import ProtoNet

    torch.manual_seed(3)
    model = Conv4(1, hidden=4, num_classes=3, image_size=16, track_running_stats=False).double()
    learner = MAML(model, head_init="prototypes", fast=False)
    ep = tiny_episode(num_tasks=1, side=16)
    params = learner.prototype_head(learner.params(), ep.support_x[0], ep.support_y[0])
    logits = learner.predict(params, ep.query_x[0])
    proto = ProtoNet(model.features)
    want = proto.predict(proto.adapt(ep.support_x[0], ep.support_y[0]), ep.query_x[0])
    torch.testing.assert_close(logits.softmax(1), want.softmax(1), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("first_order", [False, True])
def test_protomaml_fast_equals_plain_and_trains_the_body_not_the_head(first_order):
    grads = []
    for fast in (False, True):
        torch.manual_seed(4)
        model = Conv4(1, hidden=4, num_classes=3, image_size=16,
                      track_running_stats=False).double()
        learner = MAML(model, inner_lr=0.3, inner_steps=2, head_init="prototypes",
                       first_order=first_order, fast=fast, threads=2)
        learner.meta_loss(tiny_episode(num_tasks=3, side=16))[0].backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name, g in grads[0].items():
        if name.startswith("head."):  # replaced by the prototypes in every task
            assert g is None and not grads[1][name].any()
        else:
            torch.testing.assert_close(grads[1][name], g, rtol=1e-10, atol=1e-12)
    assert grads[0]["features.0.0.weight"].abs().max() > 1e-6
    with pytest.raises(ValueError, match="nn.Linear with a bias"):
        MAML(nn.Sequential(nn.Linear(2, 2, bias=False)), head_init="prototypes", head_name="0")


@pytest.mark.parametrize("activation", [nn.Tanh(), nn.Sigmoid(), nn.SiLU(), nn.GELU("tanh"),
                                        nn.LeakyReLU(0.2)])
def test_interpreter_runs_elementwise_activations_as_the_module(activation):
    torch.manual_seed(2)
    mlp = nn.Sequential(nn.Linear(3, 5), activation, nn.Linear(5, 2)).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    params = dict(mlp.named_parameters())
    torch.testing.assert_close(Interpreter(mlp)(params, x), mlp(x), rtol=0, atol=0)
