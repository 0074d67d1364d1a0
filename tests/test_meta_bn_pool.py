"""The fused batch norm + max-pool is the two-op function, to every derivative MAML uses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mlbook.meta.bn_pool import batch_norm_max_pool, channel_mean_var

POOLS = [(2, 2, 0), (3, 2, 1)]  # kernel, stride, padding: Conv4's pool, and overlapping windows


def fused(x, weight, bias, kernel=2, stride=2, padding=0):
    return batch_norm_max_pool(x, weight, bias, 1e-5, kernel, stride, padding)


def two_ops(x, weight, bias, kernel=2, stride=2, padding=0):
    y = F.batch_norm(x, None, None, weight, bias, training=True, eps=1e-5)
    return F.max_pool2d(y, kernel, stride, padding)


def inputs(channels_last: bool, dtype=torch.float64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 5, 9, 9, generator=g, dtype=dtype) * 0.7 + 2.0
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    # Negative, small and positive gammas: negative ones pool the minimum.
    weight = torch.tensor([1.0, -0.5, 2.0, 0.3, -1.2], dtype=dtype)
    bias = torch.randn(5, generator=g, dtype=dtype)
    return [t.requires_grad_() for t in (x, weight, bias)]


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("pool", POOLS)
def test_same_function_and_derivatives_as_batch_norm_then_max_pool(channels_last, pool):
    x, weight, bias = inputs(channels_last)
    g = torch.Generator().manual_seed(1)
    probe = torch.randn(two_ops(x, weight, bias, *pool).shape, generator=g, dtype=x.dtype)

    def derivatives(f):
        out = f(x, weight, bias, *pool)
        grads = torch.autograd.grad((out * probe).sum(), (x, weight, bias), create_graph=True)
        curvature = sum((gr * gr).sum() for gr in grads)  # second derivatives through grads
        second = torch.autograd.grad(curvature, (x, weight, bias), allow_unused=True)
        # The bias gradient is the probe's sum: nothing depends on it, in either version.
        return [out, *grads, *(torch.zeros_like(t) if s is None else s
                               for s, t in zip(second, (x, weight, bias), strict=True))]

    for got, want in zip(derivatives(fused), derivatives(two_ops), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("pool", POOLS)
def test_gradients_match_finite_differences(pool):
    x, weight, bias = inputs(channels_last=True)

    def f(*args):
        return fused(*args, *pool)

    assert torch.autograd.gradcheck(f, (x, weight, bias))
    assert torch.autograd.gradgradcheck(f, (x, weight, bias))


def test_without_affine_parameters():
    x, _, _ = inputs(channels_last=True)
    got = batch_norm_max_pool(x, None, None)
    want = two_ops(x, None, None)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    g1, = torch.autograd.grad((got**2).sum(), x)
    g2, = torch.autograd.grad((want**2).sum(), x)
    torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-12)


def test_float32_stays_accurate_on_shifted_inputs():
    """Statistics and gradients in float32 stay near float64 when |mean| >> std.

    A one-pass ``E[x^2] - E[x]^2`` or a gradient written as ``s * x - s * mean`` loses the
    digits that matter here; the two-op version in float32 is the yardstick.
    """
    g = torch.Generator().manual_seed(2)
    x64 = (torch.randn(75, 16, 28, 28, generator=g, dtype=torch.float64) * 0.3 + 30.0)
    x64 = x64.contiguous(memory_format=torch.channels_last)
    weight = torch.rand(16, generator=g, dtype=torch.float64) + 0.5
    bias = torch.zeros(16, dtype=torch.float64)
    probe = torch.randn(75, 16, 14, 14, generator=g, dtype=torch.float64)

    mean, var = channel_mean_var(x64.float())
    exact_var = x64.var((0, 2, 3), unbiased=False)
    assert ((var.double() - exact_var).abs() / exact_var).max() < 1e-4
    torch.testing.assert_close(mean.double(), x64.mean((0, 2, 3)), rtol=1e-6, atol=0)

    def run(f, dtype):
        args = [t.to(dtype).requires_grad_() for t in (x64, weight, bias)]
        out = f(*args)
        grads = torch.autograd.grad((out * probe.to(dtype)).sum(), args)
        return [out.detach().double(), *(gr.double() for gr in grads)]

    exact = run(two_ops, torch.float64)

    def errors(f):
        return [float((a - b).norm() / b.norm()) for a, b in zip(run(f, torch.float32), exact,
                                                                 strict=True)]

    for one_op, separate in zip(errors(fused), errors(two_ops), strict=True):
        assert one_op < 3 * separate + 1e-6


def test_wrong_rank_is_a_clear_error():
    with pytest.raises(ValueError, match=r"x \[N, C, H, W\]"):
        batch_norm_max_pool(torch.randn(4, 5, 9), None, None)
