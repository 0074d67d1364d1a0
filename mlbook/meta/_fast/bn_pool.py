"""Batch norm (batch statistics) then max-pool as one op, optionally after the first conv.

* :func:`batch_norm_max_pool` is ``max_pool(batch_norm(x))``;
* :func:`conv_batch_norm_max_pool` is ``max_pool(batch_norm(conv2d(image)))`` for a first
  convolution with few input channels, and never holds the full-size convolution output.

Why: in a MAML step on a CPU, the full-size activations of the first block (75 query images
at 64x28x28: 15 MB each) cost more than their arithmetic. Run as written, the block writes
the convolution output, a normalised copy of it (kept for the backward pass), and in the
backward pass two more full-size buffers (the pool's zero-filled gradient, then batch norm's).
Fresh buffers that large are handed out by the kernel page by page, and those page faults
were a large share of the step (``benchmarks/results/maml_throughput.md``).

The identity used: batch norm is, per channel ``c``, the affine map
``y = s_c * (x - mean_c) + beta_c`` with ``s_c = gamma_c / sqrt(var_c + eps)``. Max-pooling an
increasing map is mapping the max, so for ``s_c > 0``::

    max_pool(batch_norm(x))[n, c, i, j] = s_c * (x[n, c, k*] - mean_c) + beta_c

where ``k*`` is the position of the largest ``x`` in the window (the smallest one where
``gamma_c < 0``). So the op pools ``x`` itself and normalises only the pooled quarter.

Gradients. The hand-written backward is first order: the pool's gradient at the pooled
positions plus the statistics' part, ``(x - mean) * slope + shift`` per channel. When a graph
of the backward is needed (second-order MAML differentiates the inner step's gradient), the
backward instead differentiates a plain autograd expression of the same function (the pooled
values gathered at the same positions), so every higher derivative is autograd's own.

Both ops are checked in float64 against the separate ops and against finite differences
(``tests/test_meta_bn_pool.py``), including negative ``gamma``. At ``gamma_c == 0`` exactly
the function is flat in ``x`` and not differentiable in ``gamma_c``; the op then uses the
largest element's position (a valid subgradient), where the two-op version would use the
first element of the window.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.nn.modules.utils import _pair

# Values per slice of the batch in the full-size passes: small temporaries are reused by the
# allocator, full-size ones would be faulted in page by page.
_CHUNK_VALUES = 1 << 19

Pool = tuple  # (kernel_size, stride, padding, dilation, ceil_mode), as F.max_pool2d takes them
# Told the batch statistics an op normalised with: ``(mean, biased variance, count)`` per
# channel, detached. ProtoNet's fast path updates batch norm's running averages from them.
StatisticsHook = Callable[[torch.Tensor, torch.Tensor, int], None]


def _batch_slices(samples: int, values_per_sample: int) -> list[slice]:
    """Slices of the batch dimension holding about ``_CHUNK_VALUES`` values each."""
    step = max(1, _CHUNK_VALUES // max(1, values_per_sample))
    return [slice(start, start + step) for start in range(0, samples, step)]


def _slices_of(x: torch.Tensor) -> list[slice]:
    """:func:`_batch_slices` for the batch dimension of ``x``."""
    return _batch_slices(x.shape[0], x.numel() // max(1, x.shape[0]))


def _per_channel(v: torch.Tensor) -> torch.Tensor:
    return v.view(1, -1, 1, 1)


def _pool_args(pool: Pool) -> tuple[list[int], list[int], list[int], list[int], bool]:
    kernel, stride, padding, dilation, ceil_mode = pool
    stride = kernel if stride is None or stride == () else stride
    return ([*_pair(kernel)], [*_pair(stride)], [*_pair(padding)], [*_pair(dilation)],
            bool(ceil_mode))


def _output_size(size: int, kernel: int, stride: int, padding: int, dilation: int,
                 ceil_mode: bool = False) -> int:
    """The output length of a convolution or ``F.max_pool2d`` along one dimension."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1  # the last window must start inside the input or its left padding
    return out


def _negative_channels(weight: torch.Tensor) -> torch.Tensor | None:
    """The channels whose ``gamma < 0`` (they pool the minimum), or ``None`` if there are none."""
    negative = weight < 0
    return negative if bool(negative.any()) else None


def _pool_into(x: torch.Tensor, negative: torch.Tensor | None, pool: Pool,
               pooled: torch.Tensor, positions: torch.Tensor) -> None:
    """Write the max of every window of ``x`` (the min on ``negative`` channels, see
    :func:`_negative_channels`) and its flat position into ``pooled`` and ``positions`` (same
    shape, e.g. slices of larger tensors; ``positions`` may be a narrower integer type than
    the pool's int64, see :func:`_empty_pooled`)."""
    args = _pool_args(pool)
    if positions.dtype == torch.int64:
        torch.ops.aten.max_pool2d_with_indices.out(x, *args, out=pooled, indices=positions)
    else:
        found = torch.empty_like(positions, dtype=torch.int64)
        torch.ops.aten.max_pool2d_with_indices.out(x, *args, out=pooled, indices=found)
        positions.copy_(found)
    if negative is not None:
        neg_pooled, neg_positions = torch.ops.aten.max_pool2d_with_indices(-x[:, negative], *args)
        pooled[:, negative] = -neg_pooled
        positions[:, negative] = neg_positions.to(positions.dtype)


def _empty_pooled(x_shape: tuple[int, ...], pool: Pool, like: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Uninitialised channels-last ``pooled`` and ``positions`` for an input of ``x_shape``.

    The positions (flat indices into ``H * W``) are kept until the backward pass, so they are
    int16 when ``H * W`` allows: a quarter of the pool's own int64 indices.
    """
    kernel, stride, padding, dilation, ceil_mode = _pool_args(pool)
    n, c, h, w = x_shape
    shape = (n, c, *(_output_size(s, k, st, p, d, ceil_mode) for s, k, st, p, d in zip(
        (h, w), kernel, stride, padding, dilation, strict=True)))
    pooled = torch.empty(shape, dtype=like.dtype, device=like.device,
                         memory_format=torch.channels_last)
    index_type = torch.int16 if h * w <= torch.iinfo(torch.int16).max else torch.int64
    positions = torch.empty(shape, dtype=index_type, device=like.device,
                            memory_format=torch.channels_last)
    return pooled, positions


def channel_mean_var(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance of ``x [N, C, H, W]``, in ``x``'s dtype.

    Two passes (the mean, then the mean of squared deviations from it), the second in slices
    of the batch: as accurate as ``torch.var_mean`` without its slow Welford kernel, and
    without a full-size temporary.
    """
    n = x.numel() // x.shape[1]
    mean = x.sum((0, 2, 3)) / n
    sq = torch.zeros_like(mean)
    for part in _slices_of(x):
        sq += (x[part] - _per_channel(mean)).square_().sum((0, 2, 3))
    return mean, sq / n


def _reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
               positions: torch.Tensor, eps: float) -> torch.Tensor:
    """The op as plain autograd ops, given the pooled positions (for higher derivatives)."""
    mean = x.mean((0, 2, 3))
    var = (x - _per_channel(mean)).square().mean((0, 2, 3))
    pooled = x.flatten(2).gather(2, positions.long().flatten(2)).view(positions.shape)
    scale = weight * torch.rsqrt(var + eps)
    return torch.addcmul(_per_channel(bias), pooled - _per_channel(mean), _per_channel(scale))


def _normalise(pooled: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, weight: torch.Tensor,
               bias: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(out, centred, invstd)``; ``pooled`` becomes ``centred = pooled - mean`` in place.

    ``(pooled - mean) * scale`` rather than ``pooled * scale - mean * scale``, which cancels
    in float32 when the mean is large.
    """
    invstd = torch.rsqrt(var + eps)
    centred = pooled.sub_(_per_channel(mean))
    out = torch.addcmul(_per_channel(bias), centred, _per_channel(weight * invstd))
    return out, centred, invstd


def _statistics_gradients(grad_out, centred, weight, invstd, n):
    """The backward pass up to the full-size part: small tensors only.

    Returns ``grad_weight``, ``grad_bias`` (of the batch norm), ``grad_pooled`` (what the pool's
    backward scatters to the pooled positions) and the per-channel ``slope``, ``shift`` with
    which the statistics contribute ``(x - mean) * slope + shift`` to every element's gradient.
    """
    sums = (0, 2, 3)
    scale = weight * invstd
    centred_dot = (grad_out * centred).sum(sums)
    grad_weight, grad_bias = centred_dot * invstd, grad_out.sum(sums)
    grad_pooled = grad_out * _per_channel(scale)
    # mean and var get gradients through the normalisation; var = mean((x - mean)^2), so
    # d var / dx = 2 (x - mean) / n and d mean / dx = 1 / n.
    grad_var = -0.5 * weight * centred_dot * invstd**3
    grad_mean = -scale * grad_bias  # = -grad_pooled.sum(sums), without another pass
    return grad_weight, grad_bias, grad_pooled, _per_channel(2.0 * grad_var / n), \
        _per_channel(grad_mean / n)


def _input_gradient(grad_pooled, x, positions, pool, mean, slope, shift) -> torch.Tensor:
    """``d loss / d x``: the pool's gradient plus ``(x - mean) * slope + shift``.

    Written as ``(x - mean) * slope``: ``slope * x - slope * mean`` would leave a per-channel
    float32 error that the next layers' sums amplify.
    """
    grad_x = torch.ops.aten.max_pool2d_with_indices_backward(
        grad_pooled, x, *_pool_args(pool), positions.long())
    for part in _slices_of(x):
        grad_x[part] += (x[part] - _per_channel(mean)).mul_(slope).add_(shift)
    return grad_x


def _create_graph_backward(reference, inputs, needs, grad_out, trailing: int):
    """Gradients of ``reference()`` w.r.t. the needed ``inputs``, as a differentiable graph."""
    wanted = [t for t, need in zip(inputs, needs, strict=True) if need]
    with torch.enable_grad():
        out = reference()
    grads = iter(torch.autograd.grad(out, wanted, grad_out, create_graph=True))
    return (*(next(grads) if need else None for need in needs), *([None] * trailing))


class _BatchNormMaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, pool, eps, on_statistics):
        mean, var = channel_mean_var(x)
        if on_statistics is not None:
            on_statistics(mean.clone(), var.clone(), x.numel() // x.shape[1])
        pooled, positions = _empty_pooled(x.shape, pool, x)
        _pool_into(x, _negative_channels(weight), pool, pooled, positions)
        out, centred, invstd = _normalise(pooled, mean, var, weight, bias, eps)
        ctx.save_for_backward(x, weight, bias, positions, centred, mean, invstd)
        ctx.pool, ctx.eps = pool, eps
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, bias, positions, centred, mean, invstd = ctx.saved_tensors
        needs = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():  # create_graph: autograd differentiates the same function
            return _create_graph_backward(
                lambda: _reference(x, weight, bias, positions, ctx.eps),
                (x, weight, bias), needs, grad_out, trailing=3)
        grad_weight, grad_bias, grad_pooled, slope, shift = _statistics_gradients(
            grad_out, centred, weight, invstd, x.numel() // x.shape[1])
        grad_x = None
        if needs[0]:
            grad_x = _input_gradient(grad_pooled, x, positions, ctx.pool, mean, slope, shift)
        return grad_x, grad_weight, grad_bias, None, None, None


def batch_norm_max_pool(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                        eps: float = 1e-5, kernel_size=2, stride=None, padding=0, dilation=1,
                        ceil_mode: bool = False, on_statistics: StatisticsHook | None = None
                        ) -> torch.Tensor:
    """``F.max_pool2d(F.batch_norm(x, None, None, weight, bias, training=True, eps=eps), ...)``.

    Parameters
    ----------
    x
        ``[N, C, H, W]``, any memory format (channels-last is what it is fast for).
    weight, bias
        ``[C]`` batch-norm scale ``gamma`` and shift ``beta``, or ``None`` (non-affine).
    eps, kernel_size, stride, padding, dilation, ceil_mode
        As for ``F.batch_norm`` and ``F.max_pool2d`` (``stride=None`` means ``kernel_size``).
    on_statistics
        Called once in the forward pass with the per-channel mean, biased variance and count
        that ``x`` was normalised with (detached), e.g. to update running averages.

    Returns
    -------
    Tensor ``[N, C, H', W']`` in channels-last memory: the same function as the two ops,
    differentiable to any order.
    """
    if x.ndim != 4:
        raise ValueError(f"batch_norm_max_pool expects x [N, C, H, W], got shape {tuple(x.shape)}")
    weight = x.new_ones(x.shape[1]) if weight is None else weight
    bias = x.new_zeros(x.shape[1]) if bias is None else bias
    pool = (kernel_size, stride, padding, dilation, ceil_mode)
    return _BatchNormMaxPool.apply(x, weight, bias, pool, eps, on_statistics)


# ----------------------------------------------------------- with the first convolution
# A convolution with few input channels as a product of image patches with the weights,
# written straight into channels-last memory (also used by mlbook.meta.functional).
def image_patches(image: torch.Tensor, kernel, stride, padding, dilation
                  ) -> tuple[torch.Tensor, int, int]:
    """Image patches ``[N, H'*W', C*kh*kw]`` of ``image [N, C, H, W]``, and ``H'``, ``W'``."""
    _, _, h, w = image.shape
    height, width = (_output_size(size, k, s, p, d) for size, k, s, p, d in zip(
        (h, w), kernel, stride, padding, dilation, strict=True))
    patches = F.unfold(image, kernel, dilation, padding, stride)  # [N, C*kh*kw, H'*W']
    return patches.transpose(1, 2).contiguous(), height, width


def patch_weights(weight: torch.Tensor) -> torch.Tensor:
    """Convolution weights ``[O, C, kh, kw]`` as a contiguous ``[C*kh*kw, O]`` matrix.

    Contiguous, not a transposed view: with the view, autograd computes the weight gradient
    as ``grad.t() @ patches``, a ``[O, N*H'*W'] x [N*H'*W', C*kh*kw]`` product that ran 7x
    slower on this CPU than ``patches.t() @ grad`` (and copied the full-size gradient).
    """
    return weight.reshape(weight.shape[0], -1).t().contiguous()


def patch_convolution(patches: torch.Tensor, w2: torch.Tensor, height: int, width: int,
                      bias: torch.Tensor | None = None) -> torch.Tensor:
    """The convolution of images from their patches ``[n, H'*W', K]`` and
    :func:`patch_weights` ``w2``: ``[n, O, H', W']`` in channels-last memory."""
    rows = patches.reshape(-1, w2.shape[0])
    out = rows @ w2 if bias is None else torch.addmm(bias, rows, w2)
    return out.view(patches.shape[0], height, width, -1).permute(0, 3, 1, 2)


class _ConvBatchNormMaxPool(torch.autograd.Function):
    """``max_pool(batch_norm(conv2d(image)))`` that never holds the full-size convolution.

    For a first convolution with few input channels, ``conv2d`` is a cheap product of small
    image patches with the weights. So its output is computed slice by slice of the batch (a
    few images at a time): in the forward pass for the statistics and the pooled positions,
    and again in the backward pass, where each slice's gradient goes straight into the
    weight gradient. What is kept is the input image and the pooled quarter.

    The convolution's bias is left out of the arithmetic: batch norm removes any per-channel
    constant, so the output does not depend on it and its gradient is exactly zero.
    """

    @staticmethod
    def forward(ctx, image, conv_weight, conv_bias, weight, bias, conv, pool, eps,
                on_statistics):
        patches, height, width = image_patches(image, conv_weight.shape[2:], *conv)
        w2 = patch_weights(conv_weight)  # [K, O]
        out_channels = w2.shape[1]
        pooled, positions = _empty_pooled((image.shape[0], out_channels, height, width), pool,
                                          image)
        negative = _negative_channels(weight)  # once, not per slice
        means, sq_devs, counts = [], [], []
        for part in _batch_slices(image.shape[0], height * width * out_channels):
            x = patch_convolution(patches[part], w2, height, width)
            rows = x.permute(0, 2, 3, 1).reshape(-1, out_channels)  # a view
            means.append(rows.mean(0))
            sq_devs.append((rows - means[-1]).square_().sum(0))
            counts.append(rows.shape[0])
            _pool_into(x, negative, pool, pooled[part], positions[part])
        # The slices' statistics combined exactly (Chan et al.), as accurate as two passes.
        count = torch.tensor(counts, dtype=image.dtype, device=image.device).unsqueeze(1)
        slice_means = torch.stack(means)
        n = sum(counts)
        mean = (count * slice_means).sum(0) / n
        var = (torch.stack(sq_devs).sum(0) + (count * (slice_means - mean) ** 2).sum(0)) / n
        if on_statistics is not None:  # the convolution's output includes its bias
            on_statistics(mean.clone() if conv_bias is None else mean + conv_bias.detach(),
                          var.clone(), n)
        out, centred, invstd = _normalise(pooled, mean, var, weight, bias, eps)
        # The patches are recomputed in the backward pass (cheap) rather than kept.
        ctx.save_for_backward(image, conv_weight, conv_bias, weight, bias, positions, centred,
                              mean, invstd)
        ctx.conv, ctx.pool, ctx.eps = conv, pool, eps
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (image, conv_weight, conv_bias, weight, bias, positions, centred, mean,
         invstd) = ctx.saved_tensors
        needs = ctx.needs_input_grad[:5]
        if torch.is_grad_enabled():  # create_graph: autograd differentiates the same function
            def reference():
                x = F.conv2d(image, conv_weight, conv_bias, *ctx.conv)
                return _reference(x, weight, bias, positions, ctx.eps)
            return _create_graph_backward(reference, (image, conv_weight, conv_bias, weight,
                                                      bias), needs, grad_out, trailing=4)

        patches, height, width = image_patches(image, conv_weight.shape[2:], *ctx.conv)
        grad_weight, grad_bias, grad_pooled, slope, shift = _statistics_gradients(
            grad_out, centred, weight, invstd, patches.shape[0] * patches.shape[1])
        w2 = patch_weights(conv_weight)
        grad_w2 = torch.zeros_like(w2)
        grad_patches = torch.empty_like(patches) if needs[0] else None
        for part in _batch_slices(patches.shape[0], height * width * w2.shape[1]):
            x = patch_convolution(patches[part], w2, height, width)
            grad_x = _input_gradient(grad_pooled[part], x, positions[part], ctx.pool, mean,
                                     slope, shift)
            grad_rows = grad_x.permute(0, 2, 3, 1).reshape(-1, w2.shape[1])
            grad_w2.addmm_(patches[part].reshape(-1, w2.shape[0]).t(), grad_rows)
            if grad_patches is not None:
                grad_patches[part] = (grad_rows @ w2.t()).view_as(patches[part])
        grad_image = None
        if grad_patches is not None:
            stride, padding, dilation = ctx.conv
            grad_image = F.fold(grad_patches.transpose(1, 2), image.shape[2:],
                                conv_weight.shape[2:], dilation, padding, stride)
        grad_conv_bias = torch.zeros_like(conv_bias) if needs[2] else None
        return (grad_image, grad_w2.t().reshape(conv_weight.shape), grad_conv_bias,
                grad_weight, grad_bias, None, None, None, None)


def conv_batch_norm_max_pool(image: torch.Tensor, conv_weight: torch.Tensor,
                             conv_bias: torch.Tensor | None, weight: torch.Tensor | None,
                             bias: torch.Tensor | None, eps: float = 1e-5,
                             conv: tuple = ((1, 1), (0, 0), (1, 1)),
                             pool: Pool = (2, 2, 0, 1, False),
                             on_statistics: StatisticsHook | None = None) -> torch.Tensor:
    """``max_pool(batch_norm(conv2d(image)))`` without a full-size activation.

    Parameters
    ----------
    image
        ``[N, C, H, W]``; meant for a first layer, where ``C * kh * kw`` is small.
    conv_weight, conv_bias
        ``[O, C, kh, kw]`` and ``[O]`` (or ``None``) of a ``groups=1`` convolution.
    weight, bias
        ``[O]`` batch-norm ``gamma``, ``beta`` (or ``None``: not affine).
    eps
        Batch norm's ``eps``.
    conv
        ``(stride, padding, dilation)`` of the convolution, each a pair of ints.
    pool
        ``(kernel_size, stride, padding, dilation, ceil_mode)`` as ``F.max_pool2d`` takes them.
    on_statistics
        As for :func:`batch_norm_max_pool`: the statistics of the convolution's output.

    Returns
    -------
    Tensor ``[N, O, H'', W'']`` in channels-last memory: the same function as the three ops,
    differentiable to any order.
    """
    if image.ndim != 4:
        raise ValueError(
            f"conv_batch_norm_max_pool expects image [N, C, H, W], got {tuple(image.shape)}")
    weight = image.new_ones(conv_weight.shape[0]) if weight is None else weight
    bias = image.new_zeros(conv_weight.shape[0]) if bias is None else bias
    return _ConvBatchNormMaxPool.apply(image, conv_weight, conv_bias, weight, bias, conv, pool,
                                       eps, on_statistics)
