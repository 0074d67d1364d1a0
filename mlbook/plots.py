"""Figures the chapters share: learning curves with confidence bands and few-shot fits.

Every function draws on a Matplotlib ``Axes`` it is given (so chapters compose their own
grids), labels the axes, and returns the ``Axes``. Nothing here calls ``plt.show()``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.axes import Axes

ArrayLike = Sequence[float] | np.ndarray | torch.Tensor


def _as_1d(name: str, values: ArrayLike) -> np.ndarray:
    array = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values,
                       dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(
            f"{name} must be a non-empty 1-D sequence of numbers, got shape {array.shape}"
        )
    return array


def plot_curves(
    ax: Axes,
    x: ArrayLike,
    curves: Mapping[str, tuple[ArrayLike, ArrayLike]],
    xlabel: str,
    ylabel: str,
    title: str | None = None,
) -> Axes:
    """Mean curves with shaded confidence bands, e.g. error against adaptation steps.

    Parameters
    ----------
    ax
        Where to draw.
    x
        ``[N]`` positions on the horizontal axis (e.g. number of gradient steps).
    curves
        ``label -> (mean [N], half_width [N])``, e.g. from
        :func:`mlbook.loops.mean_confidence_interval` at each ``x``; the band is
        ``mean +- half_width``.
    xlabel, ylabel
        Axis labels; say the unit (e.g. ``"accuracy (%)"``).
    title
        Optional axes title.

    Raises
    ------
    ValueError
        If ``curves`` is empty, a label is empty, or a mean/half-width does not have the
        length of ``x``, or a half-width is negative.
    """
    xs = _as_1d("x", x)
    if not curves:
        raise ValueError("curves is empty: pass {label: (mean, half_width)}, at least one curve")
    for label, pair in curves.items():
        if not isinstance(label, str) or not label:
            raise ValueError(f"every curve needs a non-empty string label, got {label!r}")
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"curve {label!r} must be a pair (mean, half_width)")
        mean, half = _as_1d(f"{label!r} mean", pair[0]), _as_1d(f"{label!r} half-width", pair[1])
        if mean.shape != xs.shape or half.shape != xs.shape:
            raise ValueError(
                f"curve {label!r}: mean has {mean.size} and half-width {half.size} values, "
                f"but x has {xs.size}; give one value per x"
            )
        if (half < 0).any():
            raise ValueError(f"curve {label!r}: half-widths must be >= 0")
        (line,) = ax.plot(xs, mean, marker="o", markersize=4, label=label)
        ax.fill_between(xs, mean - half, mean + half, color=line.get_color(), alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend()
    return ax


def plot_sinusoid_fits(
    ax: Axes,
    x: ArrayLike,
    truth: ArrayLike,
    support_x: ArrayLike,
    support_y: ArrayLike,
    predictions: Mapping[str, ArrayLike],
    title: str | None = None,
    xlabel: str = "x (input)",
    ylabel: str = "y (output)",
) -> Axes:
    """One regression task: the true curve, the support points and predicted curves.

    Parameters
    ----------
    ax
        Where to draw.
    x
        ``[N]`` inputs at which ``truth`` and every prediction are given.
    truth
        ``[N]`` the task's true function at ``x``.
    support_x, support_y
        ``[K]`` the points the model adapted on (drawn as triangles).
    predictions
        ``label -> [N]`` predicted outputs at ``x`` (e.g. ``"pre-update"``,
        ``"1 grad step"``), drawn dashed, from light to dark in the given order.
    title
        Optional axes title.
    xlabel, ylabel
        Axis labels; say the unit where the data have one.

    Raises
    ------
    ValueError
        On mismatched lengths or an empty ``predictions``.
    """
    xs, ys = _as_1d("x", x), _as_1d("truth", truth)
    if ys.shape != xs.shape:
        raise ValueError(f"truth has {ys.size} values but x has {xs.size}")
    sx, sy = _as_1d("support_x", support_x), _as_1d("support_y", support_y)
    if sx.shape != sy.shape:
        raise ValueError(f"support_x has {sx.size} values but support_y has {sy.size}")
    if not predictions:
        raise ValueError("predictions is empty: pass {label: values at x}")
    ax.plot(xs, ys, color="red", lw=2, label="ground truth")
    shades = np.linspace(0.35, 0.95, len(predictions))
    cmap = _blues()
    for shade, (label, values) in zip(shades, predictions.items(), strict=True):
        pred = _as_1d(f"prediction {label!r}", values)
        if pred.shape != xs.shape:
            raise ValueError(f"prediction {label!r} has {pred.size} values but x has {xs.size}")
        ax.plot(xs, pred, "--", color=cmap(shade), label=label)
    ax.scatter(sx, sy, marker="^", color="purple", zorder=5, label="used for grad")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    return ax


def _blues():
    # Imported lazily: matplotlib.pyplot is heavy and not needed for the functions' checks.
    from matplotlib import colormaps

    return colormaps["Blues"]
