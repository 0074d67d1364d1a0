"""A network as a pure function ``f(params, x)`` of a parameter dict: what MAML differentiates.

MAML evaluates one network at many parameter values (``theta``, then each task's adapted
``phi``). :func:`functional_forward` turns a module into ``f(params, x)``, where ``params``
maps the names of ``model.named_parameters()`` to tensors:

* ``fast=False``: :func:`torch.func.functional_call`, the module's own forward exactly as
  written, with its parameters swapped for ``params`` during the call;
* ``fast=True``: the same function interpreted op by op (:mod:`mlbook.meta._fast`), which
  is thread-safe and, on a CPU, runs in a faster memory layout. It knows the layers of
  ``nn.Sequential`` stacks and :class:`mlbook.models.Conv4`, and raises a clear error for
  others.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from mlbook.meta._fast.interpreter import Interpreter

Params = dict[str, torch.Tensor]
Forward = Callable[[Params, torch.Tensor], torch.Tensor]


def functional_forward(model: nn.Module, fast: bool = False) -> Forward:
    """``f(params, x)`` computing ``model(x)`` with ``model``'s parameters replaced by ``params``.

    Parameters
    ----------
    model
        Any module for ``fast=False``; Sequential stacks of common layers or ``Conv4`` for
        ``fast=True``.
    fast
        Use the thread-safe, CPU-layout interpreter (same function; see the module docstring).

    Raises
    ------
    ValueError
        With ``fast=True``, for a model with a layer the interpreter does not know.
    """
    if fast:
        return Interpreter(model, layout=True)

    def forward(params: Params, x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(model, params, (x,))

    return forward
