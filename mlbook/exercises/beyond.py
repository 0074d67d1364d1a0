"""Checkers for ``beyond_one_task``: the gradient-reversal layer and a PCGrad step."""

from __future__ import annotations

from collections.abc import Callable

import torch

from mlbook.exercises._checking import as_tensor, call, compare, exercise, generator, require
from mlbook.transfer import reverse_gradient


@exercise("beyond_one_task", "The gradient-reversal layer", 15,
          "torch.autograd.Function (forward and backward); the DANN section")
def check_gradient_reversal(fn: Callable) -> int:
    """Check ``fn(x, scale) -> y``: ``y`` equals ``x``, and the gradient that reaches ``x`` is
    the incoming gradient times ``-scale``. Compared with :func:`mlbook.transfer.reverse_gradient`.
    """
    cases = [((5, 3), 1.0, "a [5, 3] batch, scale 1"), ((2, 4, 3), 0.3, "a 3-d input, scale 0.3"),
             ((7,), 0.0, "scale 0: no gradient reaches the features"),
             ((1, 1), 2.5, "a single value, scale 2.5 (the closed form: -2.5 times the "
                           "incoming gradient)")]
    for i, (shape, scale, case) in enumerate(cases):
        g = generator(i)
        x = torch.randn(*shape, generator=g, dtype=torch.float64)
        upstream = torch.randn(*shape, generator=g, dtype=torch.float64)
        leaf = x.clone().requires_grad_()
        y = as_tensor(call(fn, leaf, scale, what="your gradient reversal"), "the output")
        ref_leaf = x.clone().requires_grad_()
        expected = reverse_gradient(ref_leaf, scale)
        compare(y, expected, "the forward output", {
            "the forward pass negates x: the layer is the identity going forward; only the "
            "gradient is reversed": -x,
            "the forward pass multiplies x by -scale: the layer is the identity going forward":
                -scale * x,
        }, case)
        require(y.requires_grad, f"no gradient reaches x through your layer ({case}): the "
                "output is detached from x; write a torch.autograd.Function whose backward "
                "returns the reversed gradient")
        (got,) = torch.autograd.grad(y, leaf, upstream, allow_unused=True)
        got = torch.zeros_like(x) if got is None else got
        (want,) = torch.autograd.grad(expected, ref_leaf, upstream)
        mistakes = {
            "the gradient passes through unchanged: it should be multiplied by -scale":
                upstream,
            "the gradient is negated but not scaled: multiply by -scale": -upstream,
            "the gradient is -scale everywhere, whatever comes in: multiply the incoming "
            "gradient by -scale": torch.full_like(x, -scale),
            "the gradient is scaled but not negated": scale * upstream,
        }
        compare(got, want, "the gradient that reaches x",
                {k: v for k, v in mistakes.items() if not torch.allclose(v, want)}, case)
    return len(cases)


def pcgrad_reference(g1: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
    """PCGrad for two tasks (Yu et al. 2020): each gradient loses its component along the
    other when they conflict (negative dot product); the update is the sum.

    The package trains multi-task networks without PCGrad, so the reference lives here.
    """
    dot = torch.dot(g1, g2)
    if dot >= 0:
        return g1 + g2
    return (g1 - dot / g2.dot(g2) * g2) + (g2 - dot / g1.dot(g1) * g1)


@exercise("beyond_one_task", "A PCGrad step for two tasks", 15,
          "dot products and projections; the gradient-cosine section")
def check_pcgrad(fn: Callable) -> int:
    """Check ``fn(g1, g2) -> update``, for two flattened task gradients ``[P]``.

    When the gradients conflict (``g1 . g2 < 0``) each is projected onto the normal plane of
    the *other, original* gradient, ``g1' = g1 - (g1 . g2) / |g2|^2 g2`` (and symmetrically);
    otherwise both are kept. The update is ``g1' + g2'``.
    """
    e1, e2 = torch.eye(2, dtype=torch.float64)
    cases = [(e1, -e1 + e2, "closed form: g1 = (1, 0), g2 = (-1, 1) conflict; g1' = (0.5, "
                            "0.5), g2' = (0, 1), update (0.5, 1.5)"),
             (e1, e2, "orthogonal gradients: nothing to project, the update is g1 + g2")]
    g = generator(0)
    for size, conflict in ((10, True), (10, False), (1000, True), (1, True)):
        while True:
            g1 = torch.randn(size, generator=g, dtype=torch.float64)
            g2 = torch.randn(size, generator=g, dtype=torch.float64)
            if size == 1:
                g2 = -g2.abs() * g1.sign()
            if (g1.dot(g2) < 0) == conflict:
                break
        cases.append((g1, g2, f"{size} parameters, " + ("conflicting" if conflict
                                                      else "agreeing") + " gradients"))
    for g1, g2, case in cases:
        received = call(fn, g1.clone(), g2.clone(), what="your pcgrad")
        expected = pcgrad_reference(g1, g2)
        dot = g1.dot(g2)
        p1 = g1 - dot / g2.dot(g2) * g2
        mistakes = {
            "only g1 was projected: when the gradients conflict, project g2 onto the normal "
            "plane of g1 as well": p1 + g2,
            "the update is the mean of the projected gradients; PCGrad sums them":
                expected / 2,
            "g2 was projected onto the normal plane of the already projected g1'; use the "
            "original g1 (with two tasks the order must not matter)":
                p1 + (g2 - g2.dot(p1) / p1.dot(p1).clamp_min(1e-300) * p1),
        }
        if dot >= 0:
            mistakes = {"the gradients were projected although they agree (g1 . g2 >= 0): "
                        "PCGrad only changes conflicting gradients":
                        p1 + (g2 - dot / g1.dot(g1) * g1)}
        compare(received, expected, "the update", {
            k: v for k, v in mistakes.items() if not torch.allclose(v, expected)}, case)
    return len(cases)
