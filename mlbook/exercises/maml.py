"""Checkers for the MAML-family exercises (chapters ``maml_math`` and ``maml_sinusoid``).

The networks here are small ``tanh`` MLPs written as pure functions ``fmodel(params, x)`` in
float64, with sinusoid-like regression tasks (and a classification task for the inner
update); every reference goes through :func:`mlbook.meta.inner_update`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F

from mlbook.exercises._checking import (
    ExerciseFailed,
    call,
    compare,
    exercise,
    generator,
    require,
)
from mlbook.meta import inner_update

Params = dict[str, torch.Tensor]


def mlp(params: Params, x: torch.Tensor) -> torch.Tensor:
    """``tanh`` MLP with one hidden layer: ``x [B, d_in] -> [B, d_out]``."""
    return torch.tanh(x @ params["w1"].T + params["b1"]) @ params["w2"].T + params["b2"]


def mlp_params(seed: int, d_in: int = 1, hidden: int = 8, d_out: int = 1) -> Params:
    g = generator(seed)
    shapes = {"w1": (hidden, d_in), "b1": (hidden,), "w2": (d_out, hidden), "b2": (d_out,)}
    return {n: 0.7 * torch.randn(*s, generator=g, dtype=torch.float64) for n, s in shapes.items()}


def sinusoid_task(seed: int, points: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = generator(seed)
    amplitude, phase = 0.1 + 4.9 * torch.rand(2, generator=g, dtype=torch.float64)
    x = 10 * torch.rand(points, 1, generator=g, dtype=torch.float64) - 5
    return x, amplitude * torch.sin(x - phase / 1.6)


def leaves(params: Mapping[str, torch.Tensor]) -> Params:
    return {n: p.detach().clone().requires_grad_() for n, p in params.items()}


def _check_params(received, expected: Params, what: str, case: str,
                  mistakes: Mapping[str, Params] | None = None) -> None:
    """Compare two ``name -> tensor`` dicts, name by name."""
    if not isinstance(received, Mapping):
        raise ExerciseFailed(f"{what} ({case}) should be a dict name -> tensor, like params; "
                             f"got {type(received).__name__}")
    missing = sorted(set(expected) - set(received))
    extra = sorted(set(received) - set(expected))
    require(not missing and not extra, f"{what} ({case}) should have the keys "
            f"{sorted(expected)}; missing {missing}, unexpected {extra}")
    for name in expected:
        compare(received[name], expected[name], f"{what}[{name!r}]",
                {d: m[name] for d, m in (mistakes or {}).items()}, case)


def _grads(value: torch.Tensor, at: Params, what: str, case: str) -> Params:
    require(isinstance(value, torch.Tensor) and value.requires_grad,
            f"{what} ({case}) does not depend on params in the autograd graph: no gradient "
            "can reach theta. Compute each step with torch operations, without .detach() "
            "or torch.no_grad()")
    grads = torch.autograd.grad(value, list(at.values()), allow_unused=True)
    return {n: torch.zeros_like(p) if g is None else g
            for (n, p), g in zip(at.items(), grads, strict=True)}


# --- maml_math -------------------------------------------------------------------------------

INNER_CASES = [
    # (seed, support points, steps, inner_lr, classification, description)
    (0, 10, 1, 0.05, False, "10 support points, one step"),
    (1, 5, 3, 0.02, False, "5 support points, three steps"),
    (2, 1, 2, 0.1, False, "one-shot: a single support point, two steps"),
    (3, 6, 2, 0.3, True, "3-way classification with cross-entropy, two steps"),
]


def _uphill(loss_fn: Callable) -> Callable:
    return lambda a, b: -loss_fn(a, b)


def _reptile(params: Params, adapted: list[Params], scale: float,
             total: bool = False) -> Params:
    """``theta + scale * mean_t (phi_t - theta)`` (the sum with ``total``)."""
    steps = {n: sum(phi[n] - params[n] for phi in adapted) / (1 if total else len(adapted))
             for n in params}
    return {n: params[n] + scale * steps[n] for n in params}


def _constant(params: Params, x: torch.Tensor) -> torch.Tensor:
    return params["w"].expand(len(x), 1)


@exercise("maml_math", "MAML's inner loop, differentiable in theta", 20,
          "torch.autograd.grad with create_graph; the meta-gradient section")
def check_inner_update(fn: Callable) -> int:
    """Check ``fn(fmodel, params, support_x, support_y, loss_fn, inner_lr, steps) -> phi``.

    ``phi`` (a dict like ``params``) must be ``steps`` steps of gradient descent on
    ``loss_fn(fmodel(phi, support_x), support_y)`` from ``params``, kept in the autograd graph
    so that the meta-gradient (a query loss at ``phi``, differentiated with respect to
    ``params``) contains the Hessian term. Compared with :func:`mlbook.meta.inner_update`.
    """
    for seed, points, steps, lr, classify, case in INNER_CASES:
        params = mlp_params(seed, d_out=3 if classify else 1)
        if classify:
            g = generator(seed + 100)
            sx = torch.randn(points, 1, generator=g, dtype=torch.float64)
            sy = torch.arange(points) % 3
            qx, qy = torch.randn(9, 1, generator=g, dtype=torch.float64), torch.arange(9) % 3
            loss_fn = F.cross_entropy
        else:
            sx, sy = sinusoid_task(seed, points)
            qx, qy = sinusoid_task(seed, 10)
            loss_fn = F.mse_loss
        theta = leaves(params)
        received = call(fn, mlp, theta, sx, sy, loss_fn, lr, steps, what="your inner update")
        ref_theta = leaves(params)
        expected = inner_update(mlp, ref_theta, sx, sy, loss_fn, lr, steps)
        with torch.no_grad():
            mistakes = {
                "the step goes uphill: phi = theta - inner_lr * gradient":
                    inner_update(mlp, params, sx, sy, _uphill(loss_fn), lr, steps),
                f"phi is one step from theta, but {steps} steps were asked for":
                    inner_update(mlp, params, sx, sy, loss_fn, lr, 1),
            }
        if steps == 1:
            del mistakes[f"phi is one step from theta, but {steps} steps were asked for"]
        _check_params(received, {n: p.detach() for n, p in expected.items()}, "phi", case,
                      mistakes)
        query_loss = loss_fn(mlp(received, qx), qy)
        got = _grads(query_loss, theta, "the query loss at your phi", case)
        want = _grads(loss_fn(mlp(expected, qx), qy), ref_theta, "the reference", case)
        first_order_theta = leaves(params)
        fo = inner_update(mlp, first_order_theta, sx, sy, loss_fn, lr, steps, first_order=True)
        first_order = _grads(loss_fn(mlp(fo, qx), qy), first_order_theta, "", case)
        _check_params(got, want, "the meta-gradient through phi", case, {
            "the meta-gradient misses the Hessian term: the inner gradients were treated as "
            "constants. Keep their graph (torch.autograd.grad(..., create_graph=True))":
                first_order})
    # Closed form: fmodel(p, x) = p["w"] (a constant), squared error to y = 1.
    const = {"w": torch.tensor([3.0], dtype=torch.float64)}
    phi = call(fn, _constant, leaves(const),
               torch.zeros(4, 1, dtype=torch.float64), torch.ones(4, 1, dtype=torch.float64),
               F.mse_loss, 0.25, 1, what="your inner update")
    _check_params(phi, {"w": torch.tensor([2.0], dtype=torch.float64)}, "phi",
                  "a constant prediction w = 3, squared error to 1, step 0.25: w - 0.25 * 2 * "
                  "(3 - 1) = 2")
    return len(INNER_CASES) + 1


def quadratic_reference(theta: torch.Tensor, a: torch.Tensor, c: torch.Tensor, alpha: float,
                        steps: int) -> torch.Tensor:
    """MAML's meta-gradient on the bowl ``0.5 (theta - c)^T A (theta - c)``, by autograd."""
    def loss(pred: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
        return 0.5 * (pred - centre) @ a @ (pred - centre)

    at = {"theta": theta.detach().clone().requires_grad_()}
    phi = inner_update(lambda p, _: p["theta"], at, theta, c, loss, alpha, steps)
    (g,) = torch.autograd.grad(loss(phi["theta"], c), at["theta"])
    return g


def _bowl(seed: int, dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = generator(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    a = q @ torch.diag(0.2 + 2 * torch.rand(dim, generator=g, dtype=torch.float64)) @ q.T
    return (torch.randn(dim, generator=g, dtype=torch.float64), 0.5 * (a + a.T),
            torch.randn(dim, generator=g, dtype=torch.float64))


@exercise("maml_math", "MAML's meta-gradient on the quadratic toy", 15,
          "the two-dimensional toy; the meta-gradient and its Hessian term")
def check_quadratic_meta_gradient(fn: Callable) -> int:
    """Check ``fn(theta [d], A [d, d], c [d], alpha, steps) -> gradient [d]``.

    The task loss is ``L(theta) = 0.5 (theta - c)^T A (theta - c)`` for support and query
    alike; the answer is the gradient of ``L(phi)`` with respect to ``theta``, where ``phi``
    is ``steps`` gradient steps of size ``alpha`` from ``theta`` (compared with autograd
    through :func:`mlbook.meta.inner_update`).
    """
    cases = [(0, 2, 1, 0.4), (1, 2, 2, 0.4), (2, 5, 3, 0.2), (3, 3, 1, 0.9)]
    for seed, dim, steps, alpha in cases:
        theta, a, c = _bowl(seed, dim)
        case = f"a random {dim}-dimensional bowl, alpha = {alpha}, {steps} step(s)"
        contraction = torch.linalg.matrix_power(torch.eye(dim, dtype=torch.float64) - alpha * a,
                                                steps)
        received = call(fn, theta.clone(), a.clone(), c.clone(), alpha, steps,
                        what="your meta-gradient function")
        compare(received, quadratic_reference(theta, a, c, alpha, steps), "the meta-gradient", {
            "this is the first-order (FOMAML) gradient A (phi - c): it misses the Hessian "
            "factor (I - alpha A) of each inner step": a @ contraction @ (theta - c),
            "this is the gradient of the loss at theta, A (theta - c), without the inner "
            "step (joint training)": a @ (theta - c),
            "the sign is flipped: a gradient points uphill": -(contraction @ a @ contraction)
            @ (theta - c),
        }, case)
    theta = torch.tensor([1.0, 2.0], dtype=torch.float64)
    a = torch.diag(torch.tensor([1.0, 3.0], dtype=torch.float64))
    c = torch.zeros(2, dtype=torch.float64)
    # (I - alpha A)^2 A theta with alpha = 0.5: (0.25 * 1 * 1, 0.25 * 3 * 2) = (0.25, 1.5)
    compare(call(fn, theta.clone(), a, c, 0.5, 1, what="your meta-gradient function"),
            torch.tensor([0.25, 1.5], dtype=torch.float64), "the meta-gradient",
            case="A = diag(1, 3), c = 0, theta = (1, 2), alpha = 0.5, one step: "
                 "(I - alpha A)^2 A (theta - c) = (0.25, 1.5)")
    return len(cases) + 1


# --- maml_sinusoid ---------------------------------------------------------------------------

@exercise("maml_sinusoid", "The first-order MAML (FOMAML) gradient of one task", 15,
          "check_inner_update (maml_math) or inner_update; first-order MAML")
def check_fomaml_gradient(fn: Callable) -> int:
    """Check ``fn(fmodel, params, support_x, support_y, query_x, query_y, loss_fn, inner_lr,
    steps) -> {name: gradient}``.

    FOMAML's gradient is the query loss's gradient at the adapted ``phi``,
    ``grad_phi L_Q(phi)``, with ``phi`` from ``steps`` plain gradient steps on the support
    set: ``inner_update(..., first_order=True)`` then differentiating with respect to
    ``params``. The answer is a dict with the names of ``params``.
    """
    cases = [(10, 10, 1, 0.01, "K = 10, one step"), (11, 5, 5, 0.01, "K = 5, five steps"),
             (12, 1, 1, 0.05, "one-shot, one step")]
    for seed, points, steps, lr, case in cases:
        params = mlp_params(seed)
        sx, sy = sinusoid_task(seed, points)
        qx, qy = sinusoid_task(seed + 1, 10)
        received = call(fn, mlp, leaves(params), sx, sy, qx, qy, F.mse_loss, lr, steps,
                        what="your FOMAML gradient")
        theta = leaves(params)
        phi = inner_update(mlp, theta, sx, sy, F.mse_loss, lr, steps, first_order=True)
        expected = _grads(F.mse_loss(mlp(phi, qx), qy), theta, "", case)
        theta2 = leaves(params)
        phi2 = inner_update(mlp, theta2, sx, sy, F.mse_loss, lr, steps)
        theta3 = leaves(params)
        _check_params(received, expected, "the gradient", case, {
            "this is MAML's second-order gradient: FOMAML treats the inner gradients as "
            "constants (first_order=True, or detach them)":
                _grads(F.mse_loss(mlp(phi2, qx), qy), theta2, "", case),
            "this is the query loss's gradient at theta, before adaptation: take it at the "
            "adapted phi": _grads(F.mse_loss(mlp(theta3, qx), qy), theta3, "", case),
            "this is the SUPPORT loss's gradient at phi: the outer loop scores the query set":
                _grads(F.mse_loss(mlp(phi, sx), sy), theta, "", case),
        })
    # Closed form: a constant predictor w, squared error. One step of 0.25 from w = 3 towards
    # the support mean 1 gives phi = 2; the query mean is 0, so the gradient is 2 (phi - 0) = 4.
    received = call(fn, _constant, leaves({"w": torch.tensor([3.0], dtype=torch.float64)}),
                    torch.zeros(2, 1, dtype=torch.float64), torch.ones(2, 1, dtype=torch.float64),
                    torch.zeros(3, 1, dtype=torch.float64), torch.zeros(3, 1, dtype=torch.float64),
                    F.mse_loss, 0.25, 1, what="your FOMAML gradient")
    _check_params(received, {"w": torch.tensor([4.0], dtype=torch.float64)}, "the gradient",
                  "a constant predictor w = 3, support targets 1, query targets 0, one step of "
                  "0.25: phi = 2 and the gradient is 2 (phi - 0) = 4")
    return len(cases) + 1


@exercise("maml_sinusoid", "Reptile's update of the initialisation", 15,
          "the Reptile section of maml_math; plain SGD by hand")
def check_reptile_step(fn: Callable) -> int:
    """Check ``fn(fmodel, params, tasks, loss_fn, inner_lr, inner_steps, epsilon) -> params``.

    ``tasks`` is a list of support sets ``(x, y)``. For each, ``phi_t`` is ``inner_steps``
    steps of plain gradient descent (step ``inner_lr``) from ``params``; the answer is the new
    initialisation ``theta + epsilon * mean_t (phi_t - theta)``, a dict like ``params``.
    """
    cases = [(20, 1, 5, 0.02, 0.5, "one task, five inner steps"),
             (21, 4, 3, 0.02, 0.1, "four tasks, three inner steps"),
             (22, 3, 1, 0.05, 1.0, "three tasks, one inner step, epsilon = 1")]
    for seed, num_tasks, steps, lr, eps, case in cases:
        params = mlp_params(seed)
        tasks = [sinusoid_task(seed * 10 + t, 10) for t in range(num_tasks)]
        received = call(fn, mlp, {n: p.clone() for n, p in params.items()},
                        [(x.clone(), y.clone()) for x, y in tasks], F.mse_loss, lr, steps, eps,
                        what="your Reptile step")
        with torch.no_grad():
            phis = [inner_update(mlp, params, x, y, F.mse_loss, lr, steps) for x, y in tasks]
            one = [inner_update(mlp, params, x, y, F.mse_loss, lr, 1) for x, y in tasks]
        def step(adapted: list[Params], scale: float = eps, total: bool = False,
                 params: Params = params) -> Params:
            return _reptile(params, adapted, scale, total)

        mistakes = {
            "the differences phi_t - theta are summed over tasks, not averaged":
                step(phis, total=True),
            "theta moved all the way to the mean of the phi_t: scale the step by epsilon":
                step(phis, 1.0),
            "theta moved away from the adapted weights: the update is theta + epsilon * "
            "mean(phi - theta)": step(phis, -eps),
        }
        if steps > 1:
            mistakes["each phi_t is one gradient step from theta, but inner_steps steps were "
                     "asked for"] = step(one)
        if num_tasks == 1:
            del mistakes["the differences phi_t - theta are summed over tasks, not averaged"]
        if math.isclose(eps, 1.0):
            del mistakes["theta moved all the way to the mean of the phi_t: scale the step by "
                         "epsilon"]
        _check_params(received, step(phis), "the new theta", case, mistakes)
    # Closed form: constant predictor, squared error; each SGD step of 0.25 halves the gap
    # to the task's target mean, so after 2 steps phi_t - theta = 0.75 (mean_t - theta).
    tasks = [(torch.zeros(2, 1, dtype=torch.float64), torch.full((2, 1), v, dtype=torch.float64))
             for v in (1.0, 3.0)]
    received = call(fn, _constant, {"w": torch.tensor([0.0], dtype=torch.float64)}, tasks,
                    F.mse_loss, 0.25, 2, 0.5, what="your Reptile step")
    _check_params(received, {"w": torch.tensor([0.75], dtype=torch.float64)}, "the new theta",
                  "a constant predictor w = 0, tasks with targets 1 and 3, two SGD steps of "
                  "0.25 each halve the gap: phi = 0.75 and 2.25, theta + 0.5 * mean(phi - theta) "
                  "= 0.75")
    return len(cases) + 1
