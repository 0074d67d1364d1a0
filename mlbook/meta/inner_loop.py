"""MAML's inner loop: a few gradient steps on one task's support set, as a function of theta.

    phi_0 = theta,    phi_{j+1} = phi_j - alpha * grad L_S(phi_j)

:func:`inner_update` returns ``phi`` as a differentiable function of ``theta`` (second order:
the graph of each inner gradient is kept, so the meta-gradient contains Hessian-vector
products of ``L_S``), or treats the inner gradients as constants (first order). MAML, FOMAML,
Meta-SGD (a learned ``alpha`` per parameter), ANIL (only the head adapts) and ProtoMAML all
use it (:mod:`mlbook.meta.maml`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import torch

from mlbook.meta.functional import Params

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
InnerLR = float | Mapping[str, torch.Tensor]


def check_steps(steps: object, name: str = "steps") -> int:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(
            f"{name} must be an int >= 1 (number of inner gradient steps), got {steps!r}"
        )
    return steps


def check_lr(inner_lr: object) -> None:
    if isinstance(inner_lr, Mapping):
        return
    if (not isinstance(inner_lr, (int, float)) or isinstance(inner_lr, bool)
            or not 0 < inner_lr < math.inf):
        raise ValueError(
            "inner_lr must be a positive finite number or a dict of per-parameter tensors, "
            f"got {inner_lr!r}"
        )


def inner_update(
    fmodel: Callable[[Params, torch.Tensor], torch.Tensor],
    params: Params,
    support_x: torch.Tensor,
    support_y: torch.Tensor,
    loss_fn: LossFn,
    inner_lr: InnerLR,
    steps: int = 1,
    first_order: bool = False,
    adapt_names: Iterable[str] | None = None,
) -> Params:
    """Adapt ``params`` to one task by ``steps`` steps of gradient descent on its support set.

    Parameters
    ----------
    fmodel
        Functional forward ``fmodel(params, x) -> predictions``, e.g.
        :func:`mlbook.meta.functional_forward` ``(model)``.
    params
        ``name -> tensor``; the tensors ``theta`` (requiring grad when a meta-gradient is
        wanted).
    support_x, support_y
        One task's support inputs ``[S, *sample]`` and targets ``[S]`` (class ids) or
        ``[S, *target]`` (regression).
    loss_fn
        ``loss_fn(predictions, targets) -> scalar``, e.g. ``F.cross_entropy``, ``F.mse_loss``.
    inner_lr
        Step size ``alpha``: a positive float, or a dict ``name -> tensor`` broadcastable to
        each adapted parameter (Meta-SGD's learnable per-parameter rates).
    steps
        Number of inner gradient steps (>= 1).
    first_order
        If ``True``, the inner gradients are treated as constants (detached): the
        first-order approximation. If ``False`` the graph of the inner gradients is kept
        (``create_graph=True``) so the meta-gradient includes the second-order terms.
    adapt_names
        Names of the parameters that adapt (default: all). The others are returned as is:
        ANIL adapts only the head.

    Returns
    -------
    dict
        The adapted parameters ``phi`` (same names as ``params``). They are functions of
        ``params`` (and of ``inner_lr``) in the autograd graph when grad mode is on.

    Raises
    ------
    ValueError
        On ``steps < 1``, a non-positive ``inner_lr``, or names missing from ``params``.
    """
    check_steps(steps)
    check_lr(inner_lr)
    names = list(params) if adapt_names is None else list(adapt_names)
    missing = [n for n in names if n not in params]
    if missing or not names:
        raise ValueError(
            f"adapt_names must be a non-empty subset of the parameter names; unknown: {missing}, "
            f"known: {list(params)}"
        )
    if isinstance(inner_lr, Mapping):
        absent = [n for n in names if n not in inner_lr]
        if absent:
            raise ValueError(f"inner_lr dict has no learning rate for {absent}")
    # Second order needs the graph of the inner gradient, but only if anyone will
    # differentiate the result (not during evaluation under torch.no_grad()).
    second_order = not first_order and torch.is_grad_enabled()
    phi = dict(params)
    for _ in range(steps):
        # First order treats the inner gradient as a constant: take it at detached copies,
        # so the support pass neither keeps nor frees any of the outer graph.
        at = phi if second_order else {n: p.detach().requires_grad_() for n, p in phi.items()}
        with torch.enable_grad():  # the inner loop needs gradients even at test time
            loss = loss_fn(fmodel(at, support_x), support_y)
            grads = torch.autograd.grad(loss, [at[n] for n in names], create_graph=second_order)
        for name, grad in zip(names, grads, strict=True):
            lr = inner_lr[name] if isinstance(inner_lr, Mapping) else inner_lr
            phi[name] = phi[name] - lr * grad
    return phi
