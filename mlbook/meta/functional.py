"""A network as a pure function ``f(params, x)`` of a parameter dict: what MAML differentiates.

MAML evaluates one network at many parameter values (``theta``, then each task's adapted
``phi``). :func:`functional_forward` turns a module into ``f(params, x)``, where ``params``
maps the names of ``model.named_parameters()`` to tensors.

Two implementations, the same numbers:

* For ``nn.Sequential`` trees of ``Linear``, ``Conv2d``, ``BatchNorm1d/2d``, ``ReLU``,
  ``MaxPool2d``, ``Flatten``, ``Identity`` (and :class:`mlbook.models.Conv4`, which is
  ``features`` then ``head``), the forward is **interpreted op by op** with
  ``torch.nn.functional`` on the given tensors. Nothing is written to the module, so two
  threads can run it at once: the fast MAML path splits tasks over threads.
* Any other module falls back to :func:`torch.func.functional_call`, which swaps the module's
  attributes for the call and therefore must not run in two threads at once
  (``thread_safe`` is ``False``).

Batch norm always normalises with the statistics of the batch it sees (Finn et al. 2017
do so in the inner and outer loop); running averages are neither used nor updated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

Params = dict[str, torch.Tensor]


class _Unsupported(Exception):
    """The module tree holds a layer the interpreter does not know."""


@dataclass(frozen=True)
class _Op:
    kind: str  # "linear", "conv2d", "batch_norm", "relu", "max_pool2d", "flatten"
    prefix: str  # parameter name prefix, e.g. "features.0.0."
    config: tuple = ()


def _compile(module: nn.Module, prefix: str) -> list[_Op]:
    """The module's forward as a flat list of ops (raises :class:`_Unsupported`)."""
    # Imported here so that mlbook.meta does not import mlbook.models at module load.
    from mlbook.models.conv4 import Conv4

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
            raise _Unsupported("Conv2d with padding_mode != 'zeros' or string padding")
        return [_Op("conv2d", prefix, (module.bias is not None, module.stride, module.padding,
                                       module.dilation, module.groups))]
    if type(module) in (nn.BatchNorm1d, nn.BatchNorm2d):
        return [_Op("batch_norm", prefix, (module.affine, module.eps))]
    if type(module) is nn.ReLU:
        return [_Op("relu", prefix)]
    if type(module) is nn.MaxPool2d:
        return [_Op("max_pool2d", prefix, (module.kernel_size, module.stride, module.padding,
                                           module.dilation, module.ceil_mode))]
    if type(module) is nn.Flatten:
        return [_Op("flatten", prefix, (module.start_dim, module.end_dim))]
    if type(module) is nn.Identity:
        return []
    raise _Unsupported(f"{type(module).__name__} at {prefix!r}")


def _run(ops: list[_Op], params: Params, x: torch.Tensor) -> torch.Tensor:
    for op in ops:
        p = op.prefix
        if op.kind == "conv2d":
            has_bias, stride, padding, dilation, groups = op.config
            x = F.conv2d(x, params[p + "weight"], params[p + "bias"] if has_bias else None,
                         stride, padding, dilation, groups)
        elif op.kind == "batch_norm":
            affine, eps = op.config
            w = params[p + "weight"] if affine else None
            b = params[p + "bias"] if affine else None
            # Batch statistics, no running averages: MAML's transductive batch norm.
            x = F.batch_norm(x, None, None, w, b, training=True, momentum=0.0, eps=eps)
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


class FunctionalModel:
    """``f(params, x)``: the forward of a module at the parameters ``params``.

    Attributes
    ----------
    module
        The module whose structure (not whose parameter values) defines the function.
    thread_safe
        ``True`` when the forward is interpreted op by op (no module state is touched),
        ``False`` for the :func:`torch.func.functional_call` fallback.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        try:
            self._ops: list[_Op] | None = _compile(module, "")
        except _Unsupported:
            self._ops = None
        self.thread_safe = self._ops is not None

    def __call__(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        if self._ops is not None:
            return _run(self._ops, params, x)
        return torch.func.functional_call(self.module, params, (x,))

    def __repr__(self) -> str:
        how = "interpreted, thread-safe" if self.thread_safe else "functional_call"
        return f"FunctionalModel({type(self.module).__name__}, {how})"


def functional_forward(model: nn.Module) -> Callable[[Params, torch.Tensor], torch.Tensor]:
    """Return ``f(params, x)`` computing ``model(x)`` with ``model``'s parameters replaced.

    Parameters
    ----------
    model
        Any module; ``nn.Sequential`` stacks of common layers and :class:`mlbook.models.Conv4`
        get the thread-safe interpreted forward (see the module docstring).

    Returns
    -------
    FunctionalModel
        Call it as ``f(params, x)`` with ``params`` a dict ``name -> tensor`` holding every
        name of ``model.named_parameters()``.
    """
    return FunctionalModel(model)
