"""Sinusoid regression tasks of Finn, Abbeel & Levine (2017), the toy problem of MAML.

A task is ``y = A sin(x - phi)`` with amplitude ``A ~ U[0.1, 5.0]``, phase
``phi ~ U[0, pi]`` and inputs ``x ~ U[-5, 5]``; a learner sees ``K`` points of one task and
must predict the rest of the curve.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch


class SinusoidBatch(NamedTuple):
    """``T`` sinusoid tasks with ``K`` support and ``Q`` query points each (whole tasks).

    ``support_x``/``support_y`` are ``[T, K, 1]``, ``query_x``/``query_y`` ``[T, Q, 1]``,
    ``amplitude`` and ``phase`` (radians) ``[T]``.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    amplitude: torch.Tensor
    phase: torch.Tensor

    @property
    def num_tasks(self) -> int:
        return self.support_x.shape[0]

    def to(self, device: torch.device | str | None) -> SinusoidBatch:
        """The same batch with every tensor on ``device``."""
        return SinusoidBatch(*(t.to(device) for t in self))


def _check_range(name: str, value: tuple[float, float], strict: bool) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (low, high) of numbers, got {value!r}") from None
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if low > high or (strict and low == high):
        relation = "low < high" if strict else "low <= high"
        raise ValueError(f"{name} must satisfy {relation}, got {value!r}")
    return low, high


class SinusoidTasks:
    """Distribution over sinusoid tasks ``y = A sin(x - phase)``.

    Parameters
    ----------
    amplitude
        Range of ``A`` (uniform), default ``(0.1, 5.0)``. ``low == high`` fixes it.
    phase
        Range of the phase in radians (uniform), default ``(0, pi)``.
    x_range
        Range of the inputs (uniform), default ``(-5, 5)``; must have ``low < high``.
    """

    def __init__(self, amplitude: tuple[float, float] = (0.1, 5.0),
                 phase: tuple[float, float] = (0.0, math.pi),
                 x_range: tuple[float, float] = (-5.0, 5.0)):
        self.amplitude = _check_range("amplitude", amplitude, strict=False)
        self.phase = _check_range("phase", phase, strict=False)
        self.x_range = _check_range("x_range", x_range, strict=True)

    def __repr__(self) -> str:
        return (f"SinusoidTasks(amplitude={self.amplitude}, phase={self.phase}, "
                f"x_range={self.x_range})")

    @staticmethod
    def curve(amplitude: float | torch.Tensor, phase: float | torch.Tensor,
              x: torch.Tensor) -> torch.Tensor:
        """``amplitude * sin(x - phase)``, broadcasting (e.g. for plotting the true curve)."""
        return amplitude * torch.sin(torch.as_tensor(x) - phase)

    def sample(self, num_tasks: int, support_size: int, query_size: int,
               generator: torch.Generator | None = None,
               device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> SinusoidBatch:
        """Draw ``num_tasks`` tasks of ``support_size`` support and ``query_size`` query points.

        The sizes count the points of a whole task: a regression task has no classes, so
        there is no per-class count like the ``k_shot`` and ``q_queries`` of
        :func:`mlbook.data.sample_episodes` (``support_size`` is the ``K`` of "K-shot
        regression" in Finn et al. 2017).

        Everything is drawn and computed in float64 on the CPU from ``generator`` (so a
        seeded generator gives the same tasks for any ``dtype`` and ``device``), then cast to
        ``dtype`` and moved to ``device``.

        Raises
        ------
        ValueError
            If ``num_tasks`` or ``support_size`` is not a positive int or ``query_size`` is
            negative.
        """
        for name, value, least in (("num_tasks", num_tasks, 1), ("support_size", support_size, 1),
                                   ("query_size", query_size, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"{name} must be an int >= {least}, got {value!r}")

        def uniform(shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
            return low + (high - low) * torch.rand(shape, generator=generator,
                                                   dtype=torch.float64)

        amp = uniform((num_tasks,), *self.amplitude)
        phase = uniform((num_tasks,), *self.phase)
        x = uniform((num_tasks, support_size + query_size, 1), *self.x_range)
        y = self.curve(amp[:, None, None], phase[:, None, None], x)
        parts = (x[:, :support_size], y[:, :support_size], x[:, support_size:],
                 y[:, support_size:], amp, phase)
        return SinusoidBatch(*(t.to(device=device, dtype=dtype) for t in parts))
