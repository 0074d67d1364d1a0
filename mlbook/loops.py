"""Pieces every training loop in mlbook shares: progress bars, history, confidence intervals.

The loops themselves live next to their methods (``mlbook.transfer.pretrain``,
``mlbook.meta.train``); they all record a :class:`History`, save with
:mod:`mlbook.checkpoint` and report accuracy as :func:`mean_confidence_interval`.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from tqdm.auto import tqdm

T = TypeVar("T")


def progress(
    iterable: Iterable[T], total: int | None = None, desc: str = "", **kwargs
) -> Iterator[T]:
    """A tqdm progress bar (notebook widget or terminal), silenced by ``MLBOOK_QUIET=1``."""
    disable = os.environ.get("MLBOOK_QUIET", "0") not in ("", "0")
    return iter(tqdm(iterable, total=total, desc=desc, disable=disable, leave=False, **kwargs))


@dataclass
class History:
    """Named series recorded during training, e.g. ``{"step": [...], "train_loss": [...]}``.

    Stored as plain lists of floats so that it fits in a ``weights_only`` checkpoint.
    """

    series: dict[str, list[float]] = field(default_factory=dict)

    def log(self, **values: float) -> None:
        """Append one value to each named series."""
        for name, value in values.items():
            self.series.setdefault(name, []).append(float(value))

    def __getitem__(self, name: str) -> list[float]:
        if name not in self.series:
            raise KeyError(f"no series {name!r}; recorded: {sorted(self.series)}")
        return self.series[name]

    def __contains__(self, name: str) -> bool:
        return name in self.series

    def last(self, name: str) -> float:
        return self[name][-1]

    def state_dict(self) -> dict[str, list[float]]:
        return {k: list(v) for k, v in self.series.items()}

    @classmethod
    def from_state_dict(cls, state: dict[str, list[float]]) -> History:
        return cls({k: [float(x) for x in v] for k, v in state.items()})


def mean_confidence_interval(
    values: Iterable[float], confidence: float = 0.95
) -> tuple[float, float]:
    """Mean and half-width of its normal-approximation confidence interval.

    This is how few-shot papers report accuracy over episodes: ``mean ± z * std / sqrt(n)``
    with the sample standard deviation (``ddof=1``) and ``z = 1.96`` for 95%.

    Returns
    -------
    (mean, half_width)
        In the units of ``values`` (e.g. accuracy in [0, 1] or in percent).
    """
    x = np.asarray(list(values), dtype=np.float64)
    if x.ndim != 1 or x.size < 2:
        raise ValueError(f"need at least 2 values for an interval, got {x.size}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)  # two-sided: 1.96 for 95%
    return float(x.mean()), float(z * x.std(ddof=1) / math.sqrt(x.size))

