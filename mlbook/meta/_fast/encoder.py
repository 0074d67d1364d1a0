"""ProtoNet's fast path: an encoder's training forward through the interpreter, with batch
norm's running averages kept as the module's own forward keeps them.

A ProtoNet trains its encoder like any network: batch norm normalises with the batch's
statistics and, in training mode, moves its running averages towards them (they are what
eval mode normalises with). :class:`~mlbook.meta._fast.interpreter.Interpreter` computes the
same forward faster on a CPU (a training step about 2.5x faster for ``Conv4`` on a 60-way
episode, ``benchmarks/results/protonet_step.md``) but
writes nothing to the module; here it reports each batch norm's batch statistics and
:func:`update_running_stats` applies PyTorch's update rule to the module's buffers.

``tests/test_meta_protonets.py`` trains a ProtoNet both ways in float64 and compares
parameters and running averages after several steps.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mlbook.meta._fast.interpreter import Interpreter, UnsupportedModel


@torch.no_grad()
def update_running_stats(norm: _BatchNorm, mean: torch.Tensor, biased_var: torch.Tensor,
                         count: int) -> None:
    """What ``norm``'s training-mode forward does to its buffers, given the batch's statistics.

    As in ``torch.nn.modules.batchnorm._BatchNorm.forward``: ``num_batches_tracked`` counts the
    batch; the running mean and the running (unbiased) variance move by ``momentum``, or by
    ``1 / num_batches_tracked`` (a cumulative average) when ``momentum`` is ``None``.
    """
    if not norm.track_running_stats or norm.running_mean is None:
        return
    factor = norm.momentum
    if norm.num_batches_tracked is not None:
        norm.num_batches_tracked.add_(1)
        if norm.momentum is None:
            factor = 1.0 / float(norm.num_batches_tracked)
    unbiased = biased_var * (count / max(count - 1, 1))
    norm.running_mean.lerp_(mean.to(norm.running_mean.dtype), factor)
    norm.running_var.lerp_(unbiased.to(norm.running_var.dtype), factor)


class FastEncoder:
    """``encoder(x)`` in training mode, computed by the interpreter.

    Parameters
    ----------
    encoder
        The module; raises :class:`UnsupportedModel` if the interpreter does not know it.
    """

    def __init__(self, encoder: nn.Module) -> None:
        self.encoder = encoder
        self.interpreter = Interpreter(encoder)
        self._norms = {f"{name}.": m for name, m in encoder.named_modules()
                       if isinstance(m, _BatchNorm)}

    def applies(self, x: torch.Tensor) -> bool:
        """Whether the fast forward computes what ``encoder(x)`` would: a CPU input and every
        module in training mode (the interpreter normalises with batch statistics)."""
        return x.device.type == "cpu" and all(m.training for m in self.encoder.modules())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        statistics: list[tuple[str, torch.Tensor, torch.Tensor, int]] = []
        out = self.interpreter(dict(self.encoder.named_parameters()), x,
                               on_statistics=lambda *s: statistics.append(s))
        for prefix, mean, var, count in statistics:
            update_running_stats(self._norms[prefix], mean, var, count)
        return out


def fast_encoder(encoder: nn.Module) -> FastEncoder | None:
    """A :class:`FastEncoder` of ``encoder``, or ``None`` if the interpreter cannot run it."""
    try:
        return FastEncoder(encoder)
    except UnsupportedModel:
        return None


class EncoderCall:
    """``encoder(x)``, by the interpreter where it computes the same thing faster.

    ``EncoderCall(fast)(encoder, x)``: with ``fast=True`` the training forward on a CPU goes
    through a :class:`FastEncoder` (built once per encoder object and kept; ``None`` is kept
    too when the interpreter does not know the encoder, so it is not retried), otherwise the
    module's own forward. The learners that embed with an ordinary network (ProtoNet, the
    in-context learner) hold one.
    """

    def __init__(self, fast: bool) -> None:
        self.fast = fast
        self._cache: tuple[nn.Module, FastEncoder | None] | None = None

    def __call__(self, encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.fast:
            if self._cache is None or self._cache[0] is not encoder:
                self._cache = (encoder, fast_encoder(encoder))
            fast = self._cache[1]
            if fast is not None and fast.applies(x):
                return fast(x)
        return encoder(x)
