"""The fast forward: a module's forward interpreted op by op, in a CPU-friendly layout.

:class:`Interpreter` turns ``nn.Sequential`` trees of ``Linear``, ``Conv2d``,
``BatchNorm1d/2d``, ``ReLU`` (and ``Tanh``, ``Sigmoid``, ``SiLU``, ``GELU``, ``LeakyReLU``),
``MaxPool2d``, ``Flatten``, ``Identity`` (and
:class:`mlbook.models.Conv4`, which is ``features`` then ``head``) into a flat list of ops
and runs them with ``torch.nn.functional`` on the given parameter tensors. Nothing is written
to the module, so two task threads can run it at once (``torch.func.functional_call`` swaps
the module's attributes and cannot).

On a CPU it also rewrites the ops into a faster layout, each rewrite an identity (the tests
compare against the module's own forward and gradients in float64, to second order):

* **Channels-last activations.** A 4-D input is carried through the convolutions as
  ``torch.channels_last`` (NHWC in memory): there, PyTorch's CPU convolution and 2x2
  max-pool kernels run faster than in NCHW. The first convolution writes NHWC directly, as
  one matrix product of image patches with the weights.
* **Pool before ReLU.** ``max_pool(relu(x)) == relu(max_pool(x))`` (ReLU is monotone), and
  the gradients agree too; the ReLU then touches a quarter of the values.
* **Batch norm and max-pool as one op** (:mod:`mlbook.meta._fast.bn_pool`), which pools
  first and normalises only the pooled quarter, and takes a first convolution in too.
* **Centred batch norm** (a batch norm not followed by a pool): batch norm with batch
  statistics ignores a per-channel shift of its input, and subtracting the (detached) channel
  means first keeps the channels-last kernel's float32 sums accurate.

Batch norm always normalises with the statistics of the batch it sees (the rule of
:mod:`mlbook.meta.learner`); running averages are neither used nor updated here. A caller
that keeps them (ProtoNet's training, :mod:`mlbook.meta._fast.encoder`) passes
``on_statistics`` and is told each batch norm's batch mean, variance and count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from mlbook.meta._fast.bn_pool import (
    batch_norm_max_pool,
    conv_batch_norm_max_pool,
    image_patches,
    patch_convolution,
    patch_weights,
)
from mlbook.models.conv4 import Conv4

Params = dict[str, torch.Tensor]
# ``(prefix, mean, biased variance, count)`` of each batch norm's input, e.g. "features.0.1."
StatisticsHook = Callable[[str, torch.Tensor, torch.Tensor, int], None]
SUPPORTED = ("nn.Sequential trees of Linear, Conv2d, BatchNorm1d/2d, ReLU, Tanh, Sigmoid, SiLU, "
             "GELU, LeakyReLU, MaxPool2d, Flatten, Identity, and mlbook.models.Conv4")
# Parameter-free elementwise layers: the function each one computes, read off the module.
_ELEMENTWISE = {
    nn.Tanh: lambda m: torch.tanh,
    nn.Sigmoid: lambda m: torch.sigmoid,
    nn.SiLU: lambda m: F.silu,
    nn.GELU: lambda m: partial(F.gelu, approximate=m.approximate),
    nn.LeakyReLU: lambda m: partial(F.leaky_relu, negative_slope=m.negative_slope),
}


class UnsupportedModel(ValueError):
    """The module tree holds a layer the interpreter does not know."""


@dataclass(frozen=True)
class _Op:
    kind: str  # "linear", "conv2d", "batch_norm", "relu", "max_pool2d", "flatten",
    #            "batch_norm_max_pool", "conv_batch_norm_max_pool" (fast layout only)
    prefix: str  # parameter name prefix, e.g. "features.0.0."
    config: tuple = ()


def _compile(module: nn.Module, prefix: str) -> list[_Op]:
    """The module's forward as a flat list of ops (raises :class:`UnsupportedModel`)."""
    if isinstance(module, Conv4):
        features = _compile(module.features, prefix + "features.")
        return features + _compile(module.head, prefix + "head.")
    if type(module) is nn.Sequential:
        ops: list[_Op] = []
        for name, child in module.named_children():
            ops += _compile(child, f"{prefix}{name}.")
        return ops
    if type(module) is nn.Linear:
        return [_Op("linear", prefix, (module.bias is not None,))]
    if type(module) is nn.Conv2d:
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise UnsupportedModel(f"the fast path needs Conv2d at {prefix!r} to pad with zeros "
                                   "by numbers; pass fast=False to use the module's own forward")
        return [_Op("conv2d", prefix, (module.bias is not None, module.stride, module.padding,
                                       module.dilation, module.groups))]
    if type(module) in (nn.BatchNorm1d, nn.BatchNorm2d):
        return [_Op("batch_norm", prefix, (module.affine, module.eps))]
    if type(module) is nn.ReLU:
        return [_Op("relu", prefix)]
    if type(module) in _ELEMENTWISE:
        return [_Op("elementwise", prefix, (_ELEMENTWISE[type(module)](module),))]
    if type(module) is nn.MaxPool2d:
        return [_Op("max_pool2d", prefix, (module.kernel_size, module.stride, module.padding,
                                           module.dilation, module.ceil_mode))]
    if type(module) is nn.Flatten:
        return [_Op("flatten", prefix, (module.start_dim, module.end_dim))]
    if type(module) is nn.Identity:
        return []
    raise UnsupportedModel(
        f"the fast path cannot run a {type(module).__name__} (at {prefix or 'the top'!r}); it "
        f"runs {SUPPORTED}. Pass fast=False to use the module's own forward"
    )


def _fast_ops(ops: list[_Op]) -> list[_Op]:
    """The CPU rewrites of the module docstring on an op list: the same function.

    ``relu, max_pool2d`` becomes ``max_pool2d, relu`` (a quarter of the ReLU work), then
    ``batch_norm, max_pool2d`` becomes one ``batch_norm_max_pool``, and a convolution before
    that one ``conv_batch_norm_max_pool`` (used when the convolution takes patches, see
    :func:`_patch_convolution`; otherwise it runs as the two ops).
    """
    ops = list(ops)
    for i in range(len(ops) - 1):
        if ops[i].kind == "relu" and ops[i + 1].kind == "max_pool2d":
            ops[i], ops[i + 1] = ops[i + 1], ops[i]
    fused: list[_Op] = []
    for op in ops:
        if op.kind == "max_pool2d" and fused and fused[-1].kind == "batch_norm":
            norm = fused.pop()
            op = _Op("batch_norm_max_pool", norm.prefix, norm.config + op.config)
        if op.kind == "batch_norm_max_pool" and fused and fused[-1].kind == "conv2d":
            op = _Op("conv_batch_norm_max_pool", "", (fused.pop(), op))
        fused.append(op)
    return fused


def _is_nhwc(x: torch.Tensor) -> bool:
    """Whether ``x [N, C, H, W]`` lies in memory as NHWC (channels-last) with ``C > 1``.

    ``x.is_contiguous(memory_format=torch.channels_last)`` is also true for an NCHW tensor
    with one channel, which a convolution would then treat as NCHW.
    """
    return x.ndim == 4 and x.shape[1] > 1 and x.stride(1) == 1


def _conv2d_to_channels_last(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                             stride, padding, dilation) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, ...)`` for an NCHW ``x``, returned in channels-last memory.

    One matrix product of the ``[N*H'*W', C*kh*kw]`` image patches with the ``[C*kh*kw, O]``
    weights writes the output directly as NHWC. Used for a network's first convolution,
    whose few input channels make the patches small.
    """
    patches, height, width = image_patches(x, weight.shape[2:], stride, padding, dilation)
    return patch_convolution(patches, patch_weights(weight), height, width, bias)


# Below this many values per output pixel (C*kh*kw), the first convolution goes through
# patches @ weights (see _conv2d_to_channels_last); above it, the input is converted.
_MAX_PATCH = 64


def _patch_convolution(x: torch.Tensor, weight: torch.Tensor, op: _Op) -> bool:
    """Whether the convolution runs as patches @ weights (an NCHW input with few channels)."""
    if x.ndim != 4 or _is_nhwc(x):
        return False
    # The patch size from the shape, not ``weight[0].numel()``: indexing a parameter holds
    # the GIL while it waits for the parameter's autograd lock, and another task thread can
    # hold that lock while it waits for the GIL (a deadlock seen here).
    _, in_channels, kh, kw = weight.shape
    return op.config[4] == 1 and in_channels * kh * kw <= _MAX_PATCH


def _conv2d(x: torch.Tensor, params: Params, op: _Op, channels_last: bool) -> torch.Tensor:
    has_bias, stride, padding, dilation, groups = op.config
    weight = params[op.prefix + "weight"]
    bias = params[op.prefix + "bias"] if has_bias else None
    if channels_last and x.ndim == 4 and not _is_nhwc(x):
        if _patch_convolution(x, weight, op):
            return _conv2d_to_channels_last(x, weight, bias, stride, padding, dilation)
        x = x.contiguous(memory_format=torch.channels_last)
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


def _bind(hook: StatisticsHook | None, prefix: str):
    """The per-op statistics hook: ``hook`` told which batch norm the numbers belong to."""
    return None if hook is None else partial(hook, prefix)


def _conv_batch_norm_max_pool(x: torch.Tensor, params: Params, op: _Op,
                              hook: StatisticsHook | None) -> torch.Tensor:
    conv, norm = op.config
    has_bias, stride, padding, dilation, _ = conv.config
    weight = params[conv.prefix + "weight"]
    if not _patch_convolution(x, weight, conv):
        return _batch_norm_max_pool(_conv2d(x, params, conv, True), params, norm, hook)
    affine, eps, *pool = norm.config
    return conv_batch_norm_max_pool(
        x, weight, params[conv.prefix + "bias"] if has_bias else None,
        params[norm.prefix + "weight"] if affine else None,
        params[norm.prefix + "bias"] if affine else None,
        eps, (stride, padding, dilation), tuple(pool), _bind(hook, norm.prefix))


def _batch_norm(x: torch.Tensor, params: Params, op: _Op, hook: StatisticsHook | None
                ) -> torch.Tensor:
    affine, eps = op.config
    w = params[op.prefix + "weight"] if affine else None
    b = params[op.prefix + "bias"] if affine else None
    if hook is not None:
        dims = [d for d in range(x.ndim) if d != 1]
        var, mean = torch.var_mean(x.detach(), dim=dims, correction=0)
        hook(op.prefix, mean, var, x.numel() // x.shape[1])
    if _is_nhwc(x):
        # Exact (batch norm ignores per-channel shifts) and keeps float32 sums accurate.
        channel_means = x.detach().permute(0, 2, 3, 1).reshape(-1, x.shape[1]).mean(0)
        x = x - channel_means.view(1, -1, 1, 1)
    # Batch statistics, no running averages: MAML's transductive batch norm.
    return F.batch_norm(x, None, None, w, b, training=True, momentum=0.0, eps=eps)


def _batch_norm_max_pool(x: torch.Tensor, params: Params, op: _Op,
                         hook: StatisticsHook | None) -> torch.Tensor:
    affine, eps, *pool = op.config
    w = params[op.prefix + "weight"] if affine else None
    b = params[op.prefix + "bias"] if affine else None
    return batch_norm_max_pool(x, w, b, eps, *pool, on_statistics=_bind(hook, op.prefix))


def _run(ops: list[_Op], params: Params, x: torch.Tensor, channels_last: bool = False,
         hook: StatisticsHook | None = None) -> torch.Tensor:
    for op in ops:
        p = op.prefix
        if op.kind == "conv2d":
            x = _conv2d(x, params, op, channels_last)
        elif op.kind == "batch_norm":
            x = _batch_norm(x, params, op, hook)
        elif op.kind == "batch_norm_max_pool":
            x = _batch_norm_max_pool(x, params, op, hook)
        elif op.kind == "conv_batch_norm_max_pool":
            x = _conv_batch_norm_max_pool(x, params, op, hook)
        elif op.kind == "elementwise":
            x = op.config[0](x)
        elif op.kind == "relu":
            x = F.relu(x)
        elif op.kind == "max_pool2d":
            x = F.max_pool2d(x, *op.config)
        elif op.kind == "flatten":
            x = torch.flatten(x, *op.config)
        elif op.kind == "linear":
            x = F.linear(x, params[p + "weight"], params[p + "bias"] if op.config[0] else None)
        else:  # pragma: no cover - _compile only emits the kinds above
            raise AssertionError(op.kind)
    return x


class Interpreter:
    """``f(params, x)``: the forward of ``module`` at the parameters ``params``, op by op.

    Parameters
    ----------
    module
        The module whose structure (not whose parameter values) defines the function.
    layout
        ``True`` applies the CPU rewrites of the module docstring on CPU tensors; ``False``
        runs the module's ops as written, in NCHW (same function).

    Raises
    ------
    UnsupportedModel
        If the module holds a layer the interpreter does not know.
    """

    def __init__(self, module: nn.Module, layout: bool = True) -> None:
        self.module = module
        self.layout = layout
        self._ops = _compile(module, "")
        self._fast_ops = _fast_ops(self._ops)

    def __call__(self, params: Params, x: torch.Tensor,
                 on_statistics: StatisticsHook | None = None) -> torch.Tensor:
        """The forward at ``params``; ``on_statistics(prefix, mean, var, count)``, if given,
        is called for each batch norm with the (detached) statistics it normalised with:
        per-channel mean, biased variance, and the number of values per channel."""
        if self.layout and x.device.type == "cpu":
            return _run(self._fast_ops, params, x, channels_last=True, hook=on_statistics)
        return _run(self._ops, params, x, hook=on_statistics)

    def __repr__(self) -> str:
        return f"Interpreter({type(self.module).__name__}, layout={self.layout})"
