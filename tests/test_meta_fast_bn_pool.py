"""The fused batch norm + max-pool is the two-op function, to every derivative MAML uses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mlbook.meta._fast import bn_pool
from mlbook.meta._fast.bn_pool import (
    batch_norm_max_pool,
    channel_mean_var,
    conv_batch_norm_max_pool,
)

POOLS = [(2, 2, 0), (3, 2, 1)]  # kernel, stride, padding: Conv4's pool, and overlapping windows


def fused(x, weight, bias, kernel=2, stride=2, padding=0):
    return batch_norm_max_pool(x, weight, bias, 1e-5, kernel, stride, padding)


def two_ops(x, weight, bias, kernel=2, stride=2, padding=0):
    y = F.batch_norm(x, None, None, weight, bias, training=True, eps=1e-5)
    return F.max_pool2d(y, kernel, stride, padding)


def inputs(channels_last: bool, dtype=torch.float64, seed: int = 0, shape=(4, 5, 9, 9)):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=dtype) * 0.7 + 2.0
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    # Negative, small and positive gammas: negative ones pool the minimum.
    weight = torch.tensor([1.0, -0.5, 2.0, 0.3, -1.2], dtype=dtype)[:shape[1]]
    bias = torch.randn(shape[1], generator=g, dtype=dtype)
    return [t.requires_grad_() for t in (x, weight, bias)]


def derivatives(f, args, extra, probe) -> list[torch.Tensor]:
    """``f(*args, *extra)``, its gradient along ``probe`` and, through that gradient, second
    derivatives w.r.t. every tensor in ``args``."""
    out = f(*args, *extra)
    grads = torch.autograd.grad((out * probe).sum(), args, create_graph=True)
    curvature = sum((gr * gr).sum() for gr in grads)
    second = torch.autograd.grad(curvature, args, allow_unused=True)
    # A gradient that nothing depends on (the batch-norm bias's: the probe's sum) has no second
    # derivative in either version: compare zeros.
    return [out, *grads, *(torch.zeros_like(t) if s is None else s
                           for s, t in zip(second, args, strict=True))]


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("pool", POOLS)
def test_same_function_and_derivatives_as_batch_norm_then_max_pool(channels_last, pool):
    x, weight, bias = inputs(channels_last)
    g = torch.Generator().manual_seed(1)
    probe = torch.randn(two_ops(x, weight, bias, *pool).shape, generator=g, dtype=x.dtype)

    for got, want in zip(derivatives(fused, (x, weight, bias), pool, probe),
                         derivatives(two_ops, (x, weight, bias), pool, probe), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("pool", POOLS)
def test_gradients_match_finite_differences(pool):
    x, weight, bias = inputs(channels_last=True, shape=(3, 3, 6, 6))  # gradgradcheck: O(n^2)

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
    """Outputs and gradients in float32 stay as near float64 as the two NCHW ops' when
    |mean| >> std.

    Besides the relative error of each result, the per-channel sums of the input gradient are
    checked: they are exactly zero (batch norm ignores a per-channel shift of its input), and
    a drift there is what the next layers' sums amplify. (On these inputs the op's own
    choices, ``(pooled - mean) * s`` and ``(x - mean) * slope``, are not what keeps it within
    bounds: the cancelling forms measured about the same here. The test guards against
    gross losses, such as a one-pass variance.)
    """
    g = torch.Generator().manual_seed(2)
    x64 = torch.randn(75, 16, 28, 28, generator=g, dtype=torch.float64) * 0.3 + 30.0
    weight = torch.rand(16, generator=g, dtype=torch.float64) + 0.5
    bias = torch.zeros(16, dtype=torch.float64)
    probe = torch.randn(75, 16, 14, 14, generator=g, dtype=torch.float64)

    mean, var = channel_mean_var(x64.float().contiguous(memory_format=torch.channels_last))
    exact_var = x64.var((0, 2, 3), unbiased=False)
    assert ((var.double() - exact_var).abs() / exact_var).max() < 1e-4
    torch.testing.assert_close(mean.double(), x64.mean((0, 2, 3)), rtol=1e-6, atol=0)

    def run(f, dtype, memory_format):
        args = [t.to(dtype).requires_grad_() for t in (x64.contiguous(
            memory_format=memory_format), weight, bias)]
        out = f(*args)
        grads = torch.autograd.grad((out * probe.to(dtype)).sum(), args)
        return [out.detach().double(), *(gr.double() for gr in grads)]

    exact = run(two_ops, torch.float64, torch.contiguous_format)

    def errors(f, memory_format):
        got = run(f, torch.float32, memory_format)
        grad_x = got[1]
        drift = grad_x.sum((0, 2, 3)).abs().max() / grad_x.abs().sum((0, 2, 3)).max()
        return [float(drift)] + [float((a - b).norm() / b.norm())
                                 for a, b in zip(got, exact, strict=True)]

    # The yardstick: the NCHW kernels, which accumulate their statistics in float64.
    for one_op, separate in zip(errors(fused, torch.channels_last),
                                errors(two_ops, torch.contiguous_format), strict=True):
        assert one_op < 3 * separate + 1e-7


def test_wrong_rank_is_a_clear_error():
    with pytest.raises(ValueError, match=r"x \[N, C, H, W\]"):
        batch_norm_max_pool(torch.randn(4, 5, 9), None, None)


# ------------------------------------------------------------- with the first convolution
CONV = ((1, 1), (1, 1), (1, 1))  # stride, padding, dilation: Conv4's


def conv_fused(image, conv_weight, conv_bias, weight, bias, pool=(2, 2, 0, 1, False)):
    return conv_batch_norm_max_pool(image, conv_weight, conv_bias, weight, bias, 1e-5, CONV,
                                    pool)


def conv_three_ops(image, conv_weight, conv_bias, weight, bias, pool=(2, 2, 0, 1, False)):
    x = F.conv2d(image, conv_weight, conv_bias, *CONV)
    return F.max_pool2d(F.batch_norm(x, None, None, weight, bias, training=True, eps=1e-5),
                        *pool)


def conv_inputs(seed: int = 0, images: int = 5, size: int = 8):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(images, 2, size, size, generator=g, dtype=torch.float64) + 1.0
    conv_weight = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64)
    conv_bias = torch.randn(4, generator=g, dtype=torch.float64)
    weight = torch.tensor([1.0, -0.7, 0.4, 2.0], dtype=torch.float64)
    bias = torch.randn(4, generator=g, dtype=torch.float64)
    return [t.requires_grad_() for t in (image, conv_weight, conv_bias, weight, bias)]


@pytest.fixture
def small_slices(monkeypatch):
    """Slices of one or two images, so that the slice loops and their combination run."""
    monkeypatch.setattr(bn_pool, "_CHUNK_VALUES", 300)


@pytest.mark.parametrize("pool", [(2, 2, 0, 1, False), (3, 2, 1, 1, True)])
def test_conv_version_is_the_three_ops_to_second_order(small_slices, pool):
    args = conv_inputs()
    g = torch.Generator().manual_seed(3)
    probe = torch.randn(conv_three_ops(*args, pool).shape, generator=g, dtype=torch.float64)

    for got, want in zip(derivatives(conv_fused, args, (pool,), probe),
                         derivatives(conv_three_ops, args, (pool,), probe), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-11)


def test_conv_version_gradients_match_finite_differences(small_slices):
    args = conv_inputs(seed=1, images=3, size=6)  # small: gradgradcheck is O(n^2)
    assert torch.autograd.gradcheck(conv_fused, args)
    assert torch.autograd.gradgradcheck(conv_fused, args)


def test_conv_bias_before_batch_norm_gets_an_exactly_zero_gradient():
    args = conv_inputs(seed=2)
    grads = torch.autograd.grad(conv_fused(*args).square().sum(), args)
    assert torch.equal(grads[2], torch.zeros(4, dtype=torch.float64))
    assert grads[1].abs().sum() > 0


@pytest.mark.parametrize("size", [6, 7, 9])
@pytest.mark.parametrize("pool", [(2, None, 0, 1, False), (3, 2, 1, 1, True), (2, 2, 0, 2, True)])
def test_pooled_size_matches_max_pool(size, pool):
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    want = F.max_pool2d(x, *pool)
    got = batch_norm_max_pool(x, None, None, 1e-5, *pool)
    assert got.shape == want.shape


def test_large_planes_keep_int64_positions():
    """Positions are stored as int16 up to H * W = 32767 and as int64 above."""
    x, weight, bias = inputs(channels_last=True, shape=(1, 2, 182, 182))  # 33124 positions
    probe = torch.randn(1, 2, 91, 91, dtype=torch.float64)
    got = torch.autograd.grad((fused(x, weight, bias) * probe).sum(), (x, weight, bias))
    want = torch.autograd.grad((two_ops(x, weight, bias) * probe).sum(), (x, weight, bias))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_both_ops_report_the_statistics_they_normalised_with(small_slices):
    """What ProtoNet's fast path updates running averages from: the input's (the convolution
    output's, bias included) per-channel mean, biased variance and count."""
    image, conv_weight, conv_bias, weight, bias = (t.detach() for t in conv_inputs())
    x = F.conv2d(image, conv_weight, conv_bias, *CONV)
    var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
    seen = []
    batch_norm_max_pool(x, weight, bias, on_statistics=lambda *s: seen.append(s))
    conv_batch_norm_max_pool(image, conv_weight, conv_bias, weight, bias, 1e-5, CONV,
                             on_statistics=lambda *s: seen.append(s))
    assert len(seen) == 2
    for got_mean, got_var, count in seen:
        torch.testing.assert_close(got_mean, mean, rtol=0, atol=1e-12)
        torch.testing.assert_close(got_var, var, rtol=0, atol=1e-12)
        assert count == x.numel() // x.shape[1]
