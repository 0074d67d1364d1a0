"""Figures the chapters share: learning curves with confidence bands, few-shot fits, and a
diagram of which blocks of a network train and which are frozen; and :func:`show_source`,
which shows a function's code in a notebook.

Every plotting function draws on a Matplotlib ``Axes`` it is given (so chapters compose their
own grids), labels the axes, and returns the ``Axes``. Nothing here calls ``plt.show()``.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.patches import FancyArrowPatch, Patch, Rectangle
from torch import nn

from mlbook.transfer.finetune import blocks

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


#: Face colours of :func:`plot_trainable_blocks`, by the state of a block's parameters.
BLOCK_COLOURS = {"trained": "#f28e2b", "partly trained": "#ffd8a8", "frozen": "#d9d9d9"}


def _block_state(module: nn.Module) -> str:
    flags = [p.requires_grad for p in module.parameters()]
    if all(flags):
        return "trained"
    return "partly trained" if any(flags) else "frozen"


def _count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def _short(x: float) -> str:
    """``1e-4`` rather than ``0.0001`` or ``1.0e-04``."""
    mantissa, exponent = f"{x:.1e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def plot_trainable_blocks(
    ax: Axes,
    model: nn.Module,
    block_names: Sequence[str] | None = None,
    lrs: Mapping[str, float] | None = None,
    cached: Sequence[str] = (),
    title: str | None = None,
    legend: bool = True,
) -> Axes:
    """The blocks of ``model``, input to output, as boxes: trained, frozen or partly trained.

    The boxes are the blocks that :func:`mlbook.transfer.blocks` finds (the ones
    :func:`~mlbook.transfer.unfreeze_last` and
    :func:`~mlbook.transfer.layerwise_param_groups` work on), and their state is read from
    the parameters' ``requires_grad``, so the figure shows what the code will train. Each
    box names its block and its number of parameters.

    Parameters
    ----------
    ax
        Where to draw.
    model
        The network, after ``freeze`` / ``unfreeze_last`` / ``replace_head``.
    block_names
        Explicit qualified block names (input to output) instead of the automatic split.
    lrs
        ``block name -> learning rate`` (e.g. ``{g["name"]: g["lr"] for g in
        optimizer.param_groups}``): written under the blocks that train.
    cached
        Names of leading blocks whose outputs are computed once and reused (the frozen
        prefix of feature extraction); a bracket marks them.
    title
        Optional axes title.
    legend
        Draw the colour key (turn it off for all but one panel of a grid).

    Raises
    ------
    ValueError
        If the model has no blocks with parameters, or ``lrs``/``cached`` name a block that
        is not among them (the message lists the blocks).
    """
    found = blocks(model, block_names)
    if not found:
        raise ValueError(f"{type(model).__name__} has no blocks with parameters to draw")
    names = [n for n, _ in found]
    for what, given in (("lrs", list(lrs or {})), ("cached", list(cached))):
        unknown = [n for n in given if n not in names]
        if unknown:
            raise ValueError(f"{what} names unknown blocks {unknown}; the blocks are {names}")
    vertical = len(names) > 6 or max(len(n) for n in names) > 10
    height = 2.2 if vertical else 1.0
    for i, (name, module) in enumerate(found):
        state = _block_state(module)
        ax.add_patch(Rectangle((i, 0), 0.8, height, facecolor=BLOCK_COLOURS[state],
                               edgecolor="black", hatch=None if state == "trained" else "//",
                               label=f"block {name}: {state}"))
        size = _count(sum(p.numel() for p in module.parameters()))
        ax.text(i + 0.4, height / 2, f"{name}\n{size}",
                ha="center", va="center", fontsize=8, rotation=90 if vertical else 0,
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1})
        if lrs and name in lrs and state != "frozen":
            ax.text(i + 0.4, -0.12, f"lr {_short(lrs[name])}", ha="center", va="top", fontsize=7)
        if i:
            ax.add_patch(FancyArrowPatch((i - 0.2, height / 2), (i, height / 2),
                                         arrowstyle="-|>", mutation_scale=8, color="black"))
    if cached:
        last = max(names.index(n) for n in cached)
        ax.annotate("", xy=(-0.05, height + 0.15), xytext=(last + 0.85, height + 0.15),
                    arrowprops={"arrowstyle": "|-|", "color": "C0"})
        ax.text((last + 0.8) / 2, height + 0.25, "outputs computed once and cached",
                ha="center", va="bottom", fontsize=8, color="C0")
    ax.text(-0.1, height / 2, "input", ha="right", va="center", fontsize=8)
    ax.text(len(names) - 0.1, height / 2, "logits", ha="left", va="center", fontsize=8)
    ax.set_xlim(-0.8, len(names) + 0.5)
    ax.set_ylim(-0.5, height + 0.7)
    ax.set_axis_off()
    states = [_block_state(m) for _, m in found]
    if legend:
        ax.legend(handles=[Patch(facecolor=BLOCK_COLOURS[s], edgecolor="black",
                                 hatch=None if s == "trained" else "//", label=s)
                           for s in BLOCK_COLOURS if s in states],
                  loc="upper right", fontsize=8, ncols=3, frameon=False,
                  bbox_to_anchor=(1.0, 1.12))
    if title:
        ax.set_title(title, loc="left", fontsize=10)
    return ax


def _blues():
    # Imported lazily: matplotlib.pyplot is heavy and not needed for the functions' checks.
    from matplotlib import colormaps

    return colormaps["Blues"]


def _episode_part(episode, field: str, task: int) -> torch.Tensor:
    tensor = getattr(episode, field, None)
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(
            f"episode has no tensor {field!r}; pass an mlbook.data.Episode "
            "(e.g. from mlbook.data.sample_episodes)"
        )
    return tensor[task].detach().cpu()


def _rows_by_label(y: torch.Tensor, part: str) -> list[torch.Tensor]:
    """Indices of each label 0..N-1 in ``y``; every label must occur equally often."""
    if y.is_floating_point() or y.ndim != 1:
        raise ValueError(
            f"{part} labels must be a 1-D integer tensor of class ids, got dtype {y.dtype} and "
            f"shape {tuple(y.shape)}; plot_episode draws classification episodes"
        )
    labels = torch.unique(y)
    if labels.tolist() != list(range(len(labels))):
        raise ValueError(f"{part} labels must be 0..N-1, got {labels.tolist()}")
    rows = [torch.nonzero(y == label).flatten() for label in labels]
    counts = sorted({len(r) for r in rows})
    if len(counts) != 1:
        raise ValueError(f"every class needs the same number of {part} examples, got {counts}")
    return rows


def _image(x: torch.Tensor) -> tuple[np.ndarray, str | None]:
    """An image ``[C, H, W]`` as something ``imshow`` draws, and its colour map."""
    if x.shape[0] == 1:
        return x[0].numpy(), "gray_r"  # Omniglot: ink 1.0 on a 0.0 background, drawn dark
    rgb = x.permute(1, 2, 0)
    span = rgb.max() - rgb.min()
    return ((rgb - rgb.min()) / (span if span > 0 else 1)).numpy(), None


def plot_episode(episode, task: int = 0, fig=None, max_queries: int | None = None):
    """The anatomy of one N-way K-shot task: its support and query images, one row per class.

    Parameters
    ----------
    episode
        An :class:`mlbook.data.Episode` of image tasks: ``support_x [T, N*K, C, H, W]``,
        ``support_y [T, N*K]``, ``query_x [T, N*Q, C, H, W]``, ``query_y [T, N*Q]``, with
        ``C`` = 1 (drawn as dark ink on white) or 3 (rescaled to [0, 1] per image).
    task
        Which of the ``T`` tasks to draw.
    fig
        A Matplotlib ``Figure`` or ``SubFigure`` to draw into; default: a new
        ``pyplot`` figure sized to the grid.
    max_queries
        Draw at most this many query images per class (default: all ``Q``).

    Returns
    -------
    Figure or SubFigure
        ``fig``, holding two sub-figures: the support set (``N`` rows of ``K`` images, each
        row labelled with its class id) and the query set (``N`` rows of ``Q`` images).

    Raises
    ------
    ValueError
        If ``episode`` is not an image episode, ``task`` is out of range, the labels are
        not ``0..N-1`` with the same count per class in support and query, or
        ``max_queries`` is not a positive int.
    """
    support_x = getattr(episode, "support_x", None)
    if not isinstance(support_x, torch.Tensor) or support_x.ndim != 5:
        shape = tuple(support_x.shape) if isinstance(support_x, torch.Tensor) else None
        raise ValueError(
            "plot_episode draws image episodes: support_x must be [T, N*K, C, H, W], got "
            f"{shape}; sample one with mlbook.data.sample_episodes"
        )
    num_tasks = support_x.shape[0]
    if not isinstance(task, int) or isinstance(task, bool) or not 0 <= task < num_tasks:
        raise ValueError(f"task must be an int in 0..{num_tasks - 1} (the episode has "
                         f"{num_tasks} tasks), got {task!r}")
    if max_queries is not None and (not isinstance(max_queries, int)
                                    or isinstance(max_queries, bool) or max_queries < 1):
        raise ValueError(f"max_queries must be a positive int or None, got {max_queries!r}")
    sx, sy = _episode_part(episode, "support_x", task), _episode_part(episode, "support_y", task)
    qx, qy = _episode_part(episode, "query_x", task), _episode_part(episode, "query_y", task)
    if sx.shape[1] not in (1, 3) or qx.shape[1:] != sx.shape[1:]:
        raise ValueError(
            f"images must be [C, H, W] with C = 1 or 3, the same in support and query; got "
            f"support {tuple(sx.shape[1:])} and query {tuple(qx.shape[1:])}"
        )
    support_rows, query_rows = _rows_by_label(sy, "support"), _rows_by_label(qy, "query")
    if len(support_rows) != len(query_rows):
        raise ValueError(f"support has {len(support_rows)} classes but query has "
                         f"{len(query_rows)}; both must hold the same N classes")
    n_way, k_shot, q_all = len(support_rows), len(support_rows[0]), len(query_rows[0])
    q_shown = q_all if max_queries is None else min(q_all, max_queries)
    label_width, gap = 1.0, 0.5  # in image widths: room for the row labels, space between sets
    if fig is None:
        from matplotlib import pyplot as plt  # lazily: only when we must create a figure

        fig = plt.figure(figsize=(0.9 * (label_width + k_shot + gap + q_shown),
                                  0.9 * n_way + 0.9))
    parts = fig.subfigures(1, 2, width_ratios=[label_width + k_shot, gap + q_shown], wspace=0)
    query_title = (f"query set\n{q_all} per class" if q_shown == q_all
                   else f"query set\n{q_shown} of {q_all} per class")
    blocks = [(parts[0], sx, support_rows, k_shot, label_width,
               f"support set\nK = {k_shot} per class"),
              (parts[1], qx, query_rows, q_shown, gap, query_title)]
    for part, images, rows, columns, margin, title in blocks:
        part.suptitle(title, fontsize=10)
        axes = part.subplots(n_way, columns, squeeze=False, gridspec_kw={
            "left": margin / (margin + columns), "right": 0.98, "bottom": 0.02,
            "top": 1 - 0.75 / (0.9 * n_way + 0.9), "wspace": 0.08, "hspace": 0.08})
        for label, row in enumerate(rows):
            for column, ax in enumerate(axes[label]):
                picture, cmap = _image(images[row[column]])
                ax.imshow(picture, cmap=cmap)
                ax.set_xticks([])
                ax.set_yticks([])
            if part is parts[0]:
                axes[label][0].set_ylabel(f"label {label}", rotation=0, ha="right", va="center")
    return fig


class SourceListing(str):
    """Python source that a notebook displays as a code block (it has ``_repr_markdown_``)."""

    def _repr_markdown_(self) -> str:
        return f"```python\n{self}\n```"


def show_source(*functions: Callable) -> SourceListing:
    """The code of ``functions`` as a reader needs it: signature and body, no docstring.

    The last expression of a notebook cell, ``show_source(ProtoNet.adapt, ProtoNet.predict)``,
    shows the code that the chapter's text explains, read from the installed package, so the
    book can never show other code than the one it runs.
    """
    if not functions:
        raise ValueError("give at least one function, e.g. show_source(MAML.meta_loss)")
    shown = []
    for function in functions:
        source = textwrap.dedent(inspect.getsource(function))
        lines = source.splitlines()
        first = ast.parse(source).body[0].body[0]
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
            del lines[first.lineno - 1:first.end_lineno]  # the docstring
        shown.append("\n".join(lines))
    return SourceListing("\n\n".join(shown))
