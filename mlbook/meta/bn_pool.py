"""Batch norm (batch statistics) followed by max-pool, as one op: ``max_pool(batch_norm(x))``.

Why one op: in a MAML step on a CPU, the full-size activations of the first block (75 query
images at 64x28x28: 15 MB each) cost more than their arithmetic. Run as written, batch norm
then max-pool writes a normalised copy of ``x``, keeps it for the backward pass, and the
backward pass writes two more full-size buffers (the pool's zero-filled gradient, then batch
norm's). Fresh buffers that large are handed out by the kernel page by page, and those page
faults were a large share of the step (``benchmarks/results/maml_throughput.md``).

The identity used: batch norm is, per channel ``c``, the affine map
``y = s_c * (x - mean_c) + beta_c`` with ``s_c = gamma_c / sqrt(var_c + eps)``. Max-pooling an
increasing map is mapping the max, so for ``s_c > 0``::

    max_pool(batch_norm(x))[n, c, i, j] = s_c * (x[n, c, k*] - mean_c) + beta_c

where ``k*`` is the position of the largest ``x`` in the window (the smallest one where
``gamma_c < 0``). So the op pools ``x`` itself and normalises only the pooled quarter; it
keeps only ``x`` (needed anyway), the pooled positions and the per-channel statistics.

Its backward writes one full-size buffer (the pool's gradient) and adds the statistics'
gradient to it in place. That hand-written backward is first order. When a graph of the
backward is needed (MAML's second order differentiates the inner step's gradient), the
backward instead differentiates a plain autograd expression of the same function (pooled
values gathered at the same positions), so every higher derivative is autograd's own.

Both are checked in float64 against ``F.batch_norm`` then ``F.max_pool2d`` and against
finite differences (``tests/test_meta_bn_pool.py``), including negative ``gamma``.
At ``gamma_c == 0`` exactly the function is flat in ``x`` and not differentiable in
``gamma_c``; the op then uses the largest element's position (a valid subgradient), where the
two-op version would use the first element of the window.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Values per slice of the batch in the full-size passes: small temporaries are reused by the
# allocator, full-size ones would be faulted in page by page.
_CHUNK_VALUES = 1 << 19


def _batch_slices(samples: int, values_per_sample: int) -> list[slice]:
    """Slices of the batch dimension holding about ``_CHUNK_VALUES`` values each."""
    step = max(1, _CHUNK_VALUES // max(1, values_per_sample))
    return [slice(start, start + step) for start in range(0, samples, step)]


def _per_channel(v: torch.Tensor) -> torch.Tensor:
    return v.view(1, -1, 1, 1)


def channel_mean_var(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance of ``x [N, C, H, W]``, in ``x``'s dtype.

    Two passes (the mean, then the mean of squared deviations from it), the second in slices
    of the batch: as accurate as ``torch.var_mean`` without its slow Welford kernel, and
    without a full-size temporary.
    """
    n = x.numel() // x.shape[1]
    mean = x.sum((0, 2, 3)) / n
    sq = torch.zeros_like(mean)
    for part in _batch_slices(x.shape[0], x.numel() // max(1, x.shape[0])):
        sq += (x[part] - _per_channel(mean)).square_().sum((0, 2, 3))
    return mean, sq / n


def _pool_positions(x: torch.Tensor, negative: torch.Tensor, pool: tuple
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled values and flat positions of the max (the min on ``negative`` channels)."""
    kernel, stride, padding, dilation, ceil_mode = pool
    pooled, positions = F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode,
                                     return_indices=True)
    if bool(negative.any()):
        neg_pooled, neg_positions = F.max_pool2d(-x[:, negative], kernel, stride, padding,
                                                 dilation, ceil_mode, return_indices=True)
        pooled[:, negative] = -neg_pooled
        positions[:, negative] = neg_positions
    return pooled, positions


def _reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
               positions: torch.Tensor, eps: float) -> torch.Tensor:
    """The op as plain autograd ops, given the pooled positions (for higher derivatives)."""
    mean = x.mean((0, 2, 3))
    var = (x - mean.view(1, -1, 1, 1)).square().mean((0, 2, 3))
    pooled = x.flatten(2).gather(2, positions.flatten(2)).view(positions.shape)
    scale = weight * torch.rsqrt(var + eps)
    return torch.addcmul(_per_channel(bias), pooled - _per_channel(mean), _per_channel(scale))


def _statistics_gradients(grad_out, pooled, weight, mean, invstd, n):
    """The backward pass up to the full-size part: small tensors only.

    Returns ``grad_weight``, ``grad_bias`` (of the batch norm), ``grad_pooled`` (what the pool's
    backward scatters to the pooled positions) and the per-channel ``slope``, ``shift`` with
    which the statistics contribute ``(x - mean) * slope + shift`` to every element's gradient.
    """
    sums = (0, 2, 3)
    centred_dot = (grad_out * (pooled - _per_channel(mean))).sum(sums)
    grad_weight, grad_bias = centred_dot * invstd, grad_out.sum(sums)
    grad_pooled = grad_out * _per_channel(weight * invstd)
    # mean and var get gradients through the normalisation; var = mean((x - mean)^2), so
    # d var / dx = 2 (x - mean) / n and d mean / dx = 1 / n.
    grad_var = -0.5 * weight * centred_dot * invstd**3
    grad_mean = -grad_pooled.sum(sums)
    return grad_weight, grad_bias, grad_pooled, _per_channel(2.0 * grad_var / n), \
        _per_channel(grad_mean / n)


def _add_statistics_gradient(grad_x, x, mean, slope, shift) -> None:
    """``grad_x += (x - mean) * slope + shift``, slice by slice (small temporaries).

    Written as ``(x - mean) * slope``: ``slope * x - slope * mean`` would leave a per-channel
    float32 error that the next layers' sums amplify.
    """
    for part in _batch_slices(x.shape[0], x.numel() // max(1, x.shape[0])):
        grad_x[part] += (x[part] - _per_channel(mean)).mul_(slope).add_(shift)


class _BatchNormMaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, pool, eps):
        mean, var = channel_mean_var(x)
        invstd = torch.rsqrt(var + eps)
        pooled, positions = _pool_positions(x, weight < 0, pool)
        # (pooled - mean) first: scale * pooled - scale * mean would cancel in float32.
        out = torch.addcmul(_per_channel(bias), pooled - _per_channel(mean),
                            _per_channel(weight * invstd))
        ctx.save_for_backward(x, weight, bias, positions, pooled, mean, invstd)
        ctx.pool, ctx.eps = pool, eps
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, bias, positions, pooled, mean, invstd = ctx.saved_tensors
        needs = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():  # create_graph: let autograd differentiate the same function
            inputs = [t for t, need in zip((x, weight, bias), needs, strict=True) if need]
            with torch.enable_grad():
                out = _reference(x, weight, bias, positions, ctx.eps)
            grads = iter(torch.autograd.grad(out, inputs, grad_out, create_graph=True))
            return (*(next(grads) if need else None for need in needs), None, None)

        n = x.numel() // x.shape[1]
        grad_weight, grad_bias, grad_pooled, slope, shift = _statistics_gradients(
            grad_out, pooled, weight, mean, invstd, n)
        grad_x = None
        if needs[0]:
            grad_x = torch.ops.aten.max_pool2d_with_indices_backward(
                grad_pooled, x, *ctx.pool, positions)
            _add_statistics_gradient(grad_x, x, mean, slope, shift)
        return (grad_x, grad_weight if needs[1] else None, grad_bias if needs[2] else None,
                None, None)


def _patches(image: torch.Tensor, kernel: tuple[int, int], stride, padding, dilation
             ) -> tuple[torch.Tensor, int, int]:
    """Image patches ``[N, H'*W', C*kh*kw]`` of ``image [N, C, H, W]``, and ``H'``, ``W'``."""
    n, _, h, w = image.shape
    height = (h + 2 * padding[0] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    width = (w + 2 * padding[1] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    patches = F.unfold(image, kernel, dilation, padding, stride)  # [N, C*kh*kw, H'*W']
    return patches.transpose(1, 2).contiguous(), height, width


class _ConvBatchNormMaxPool(torch.autograd.Function):
    """``max_pool(batch_norm(conv2d(image)))`` that never holds the full-size convolution.

    For a first convolution with few input channels, ``conv2d`` is a cheap product of small
    image patches with the weights. So the convolution output is computed slice by slice of
    the batch (a few images at a time), once in the forward pass for the statistics and the
    pooled positions, and again in the backward pass, where each slice's gradient goes
    straight into the weight gradient. What is kept is the patches and the pooled quarter.
    """

    @staticmethod
    def forward(ctx, image, conv_weight, conv_bias, weight, bias, conv, pool, eps):
        patches, height, width = _patches(image, conv_weight.shape[2:], *conv)
        w2 = conv_weight.reshape(conv_weight.shape[0], -1).t().contiguous()
        negative = weight < 0
        pooled_parts, position_parts, means, sq_devs, counts = [], [], [], [], []
        for part in _batch_slices(image.shape[0], height * width * conv_weight.shape[0]):
            x = _conv_slice(patches[part], w2, conv_bias, height, width)
            rows = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
            slice_mean = rows.mean(0)
            means.append(slice_mean)
            sq_devs.append((rows - slice_mean).square_().sum(0))
            counts.append(rows.shape[0])
            pooled_part, positions_part = _pool_positions(x, negative, pool)
            pooled_parts.append(pooled_part)
            position_parts.append(positions_part)
        # Slice statistics combined exactly (Chan et al.): accurate in float32.
        count = torch.tensor(counts, dtype=image.dtype).unsqueeze(1)
        slice_means = torch.stack(means)
        n = int(count.sum())
        mean = (count * slice_means).sum(0) / n
        var = (torch.stack(sq_devs).sum(0) + (count * (slice_means - mean) ** 2).sum(0)) / n
        invstd = torch.rsqrt(var + eps)
        pooled = torch.cat(pooled_parts)
        positions = torch.cat(position_parts)
        out = torch.addcmul(_per_channel(bias), pooled - _per_channel(mean),
                            _per_channel(weight * invstd))
        ctx.save_for_backward(image, conv_weight, conv_bias, weight, bias, patches, positions,
                              pooled, mean, invstd)
        ctx.conv, ctx.pool, ctx.eps, ctx.size = conv, pool, eps, (height, width)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (image, conv_weight, conv_bias, weight, bias, patches, positions, pooled, mean,
         invstd) = ctx.saved_tensors
        needs = ctx.needs_input_grad[:5]
        if torch.is_grad_enabled():  # create_graph: autograd differentiates the same function
            inputs = (image, conv_weight, conv_bias, weight, bias)
            wanted = [t for t, need in zip(inputs, needs, strict=True) if need]
            with torch.enable_grad():
                x = F.conv2d(image, conv_weight, conv_bias, *ctx.conv)
                out = _reference(x, weight, bias, positions, ctx.eps)
            grads = iter(torch.autograd.grad(out, wanted, grad_out, create_graph=True))
            return (*(next(grads) if need else None for need in needs), None, None, None)

        height, width = ctx.size
        n = patches.shape[0] * patches.shape[1]
        grad_weight, grad_bias, grad_pooled, slope, shift = _statistics_gradients(
            grad_out, pooled, weight, mean, invstd, n)
        w2 = conv_weight.reshape(conv_weight.shape[0], -1).t().contiguous()
        grad_w2 = torch.zeros_like(w2)
        grad_conv_bias = torch.zeros_like(mean)
        grad_patches = torch.empty_like(patches) if needs[0] else None
        for part in _batch_slices(patches.shape[0], height * width * w2.shape[1]):
            x = _conv_slice(patches[part], w2, conv_bias, height, width)
            grad_x = torch.ops.aten.max_pool2d_with_indices_backward(
                grad_pooled[part], x, *ctx.pool, positions[part])
            _add_statistics_gradient(grad_x, x, mean, slope, shift)
            grad_rows = grad_x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
            part_patches = patches[part].reshape(-1, w2.shape[0])
            grad_w2.addmm_(part_patches.t(), grad_rows)
            grad_conv_bias += grad_rows.sum(0)
            if grad_patches is not None:
                grad_patches[part] = (grad_rows @ w2.t()).view_as(patches[part])
        grad_image = None
        if grad_patches is not None:
            kernel, (stride, padding, dilation) = conv_weight.shape[2:], ctx.conv
            grad_image = F.fold(grad_patches.transpose(1, 2), image.shape[2:], kernel,
                                dilation, padding, stride)
        return (grad_image, grad_w2.t().reshape(conv_weight.shape) if needs[1] else None,
                grad_conv_bias if needs[2] and conv_bias is not None else None,
                grad_weight if needs[3] else None, grad_bias if needs[4] else None,
                None, None, None)


def _conv_slice(patches: torch.Tensor, w2: torch.Tensor, conv_bias: torch.Tensor | None,
                height: int, width: int) -> torch.Tensor:
    """The convolution of a slice of images from its patches ``[n, H'*W', K]``: NHWC memory."""
    rows = patches.reshape(-1, w2.shape[0])
    out = rows @ w2 if conv_bias is None else torch.addmm(conv_bias, rows, w2)
    return out.view(patches.shape[0], height, width, -1).permute(0, 3, 1, 2)


def conv_batch_norm_max_pool(image: torch.Tensor, conv_weight: torch.Tensor,
                             conv_bias: torch.Tensor | None, weight: torch.Tensor | None,
                             bias: torch.Tensor | None, eps: float = 1e-5,
                             conv: tuple = ((1, 1), (0, 0), (1, 1)),
                             pool: tuple = (2, 2, 0, 1, False)) -> torch.Tensor:
    """``max_pool(batch_norm(conv2d(image)))`` without a full-size activation (see above).

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
        ``(kernel_size, stride, padding, dilation, ceil_mode)`` of ``F.max_pool2d``.

    Returns
    -------
    Tensor ``[N, O, H'', W'']`` in channels-last memory, the same function as the three ops,
    differentiable to any order.
    """
    if image.ndim != 4:
        raise ValueError(
            f"conv_batch_norm_max_pool expects image [N, C, H, W], got shape {tuple(image.shape)}")
    out_channels = conv_weight.shape[0]
    if weight is None:
        weight = image.new_ones(out_channels)
    if bias is None:
        bias = image.new_zeros(out_channels)
    return _ConvBatchNormMaxPool.apply(image, conv_weight, conv_bias, weight, bias, conv, pool,
                                       eps)


def batch_norm_max_pool(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                        eps: float = 1e-5, kernel_size=2, stride=None, padding=0, dilation=1,
                        ceil_mode: bool = False) -> torch.Tensor:
    """``F.max_pool2d(F.batch_norm(x, None, None, weight, bias, training=True, eps=eps), ...)``.

    Parameters
    ----------
    x
        ``[N, C, H, W]``, any memory format (channels-last is what it is fast for).
    weight, bias
        ``[C]`` batch-norm scale ``gamma`` and shift ``beta``, or ``None`` (non-affine).
    eps, kernel_size, stride, padding, dilation, ceil_mode
        As for ``F.batch_norm`` and ``F.max_pool2d`` (``stride=None`` means ``kernel_size``).

    Returns
    -------
    Tensor ``[N, C, H', W']``, the same function as the two ops, differentiable to any order.
    """
    if x.ndim != 4:
        raise ValueError(f"batch_norm_max_pool expects x [N, C, H, W], got shape {tuple(x.shape)}")
    channels = x.shape[1]
    if weight is None:
        weight = x.new_ones(channels)
    if bias is None:
        bias = x.new_zeros(channels)
    pool = (kernel_size, kernel_size if stride is None else stride, padding, dilation, ceil_mode)
    return _BatchNormMaxPool.apply(x, weight, bias, pool, eps)
