"""mlbook.plots: figures render on a non-interactive canvas, are labelled, and reject bad input."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from mlbook import plots  # noqa: E402
from mlbook.models import Conv4  # noqa: E402
from mlbook.plots import (  # noqa: E402
    BLOCK_COLOURS,
    plot_curves,
    plot_sinusoid_fits,
    plot_trainable_blocks,
)
from mlbook.transfer import freeze, layerwise_param_groups, replace_head, unfreeze_last  # noqa: E402


def _axes():
    fig = Figure()
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def test_plot_curves_draws_labelled_lines_and_bands():
    fig, ax = _axes()
    steps = np.arange(4)
    curves = {"MAML": ([3.0, 1.0, 0.5, 0.4], [0.1] * 4),
              "pretrained": (torch.tensor([3.0, 2.8, 2.7, 2.6]), torch.full((4,), 0.2))}
    plot_curves(ax, steps, curves, xlabel="gradient steps", ylabel="MSE", title="K=5")
    fig.canvas.draw()
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("gradient steps", "MSE", "K=5")
    assert [line.get_label() for line in ax.get_lines()] == ["MAML", "pretrained"]
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), [3.0, 1.0, 0.5, 0.4])
    assert len(ax.collections) == 2  # one confidence band per curve
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["MAML", "pretrained"]


@pytest.mark.parametrize("curves, message", [
    ({}, "empty"),
    ({"a": ([1.0, 2.0], [0.1, 0.1])}, "one value per x"),
    ({"a": ([1.0, 2.0, 3.0], [0.1, -0.1, 0.1])}, ">= 0"),
    ({"": ([1.0, 2.0, 3.0], [0.1] * 3)}, "label"),
])
def test_plot_curves_rejects_bad_input(curves, message):
    _, ax = _axes()
    with pytest.raises(ValueError, match=message):
        plot_curves(ax, [0, 1, 2], curves, xlabel="x", ylabel="y")


def test_plot_sinusoid_fits_draws_truth_predictions_and_support():
    fig, ax = _axes()
    x = torch.linspace(-5, 5, 50)
    predictions = {"pre-update": torch.zeros(50), "1 grad step": 0.5 * torch.sin(x)}
    plot_sinusoid_fits(ax, x, torch.sin(x), [0.0, 1.0], [0.0, 0.84], predictions, title="task")
    fig.canvas.draw()
    assert ax.get_xlabel() == "x (input)" and ax.get_ylabel() == "y (output)"
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["ground truth", "pre-update", "1 grad step"]
    np.testing.assert_allclose(ax.collections[0].get_offsets(), [[0.0, 0.0], [1.0, 0.84]])
    plot_sinusoid_fits(ax, x, torch.sin(x), [0.0], [0.0], predictions,
                       xlabel="t (s)", ylabel="v (m)")
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("t (s)", "v (m)")


def test_plot_sinusoid_fits_rejects_mismatched_lengths():
    _, ax = _axes()
    x = np.linspace(0, 1, 5)
    with pytest.raises(ValueError, match="prediction 'p' has 4 values"):
        plot_sinusoid_fits(ax, x, x, [0.0], [0.0], {"p": np.zeros(4)})
    with pytest.raises(ValueError, match="support_x has 2 values but support_y has 1"):
        plot_sinusoid_fits(ax, x, x, [0.0, 1.0], [0.0], {"p": x})
    with pytest.raises(ValueError, match="empty"):
        plot_sinusoid_fits(ax, x, x, [0.0], [0.0], {})


def _image_episode():
    from mlbook.data import sample_episodes

    images = torch.rand(6, 8, 1, 5, 5, generator=torch.Generator().manual_seed(0))
    return sample_episodes(images, n_way=3, k_shot=2, q_queries=4, num_tasks=2,
                           generator=torch.Generator().manual_seed(1))


def test_plot_episode_draws_support_and_query_rows_per_class():
    from mlbook.plots import plot_episode

    episode = _image_episode()
    fig = Figure()
    FigureCanvasAgg(fig)
    assert plot_episode(episode, task=1, fig=fig, max_queries=3) is fig
    fig.canvas.draw()
    support, query = fig.subfigs
    assert "K = 2" in support.get_suptitle()
    assert query.get_suptitle() == "query set\n3 of 4 per class"
    assert len(support.axes) == 3 * 2 and len(query.axes) == 3 * 3
    # Row r of the support grid holds label r's support images, in order.
    for label in range(3):
        shown = [ax.get_images()[0].get_array() for ax in support.axes[2 * label:2 * label + 2]]
        expected = episode.support_x[1][episode.support_y[1] == label, 0]
        np.testing.assert_allclose(np.stack(shown), expected.numpy())
        assert support.axes[2 * label].get_ylabel() == f"label {label}"
    first_query = query.axes[3].get_images()[0].get_array()  # row 1, column 0
    np.testing.assert_allclose(first_query, episode.query_x[1][episode.query_y[1] == 1][0, 0])


def test_plot_episode_draws_colour_images():
    from mlbook.data import Episode
    from mlbook.plots import plot_episode

    x = torch.randn(1, 2, 3, 4, 4)
    y = torch.tensor([[0, 1]])
    fig = plot_episode(Episode(x, y, x, y), fig=Figure())
    picture = fig.subfigs[0].axes[0].get_images()[0].get_array()
    assert picture.shape == (4, 4, 3) and picture.min() >= 0 and picture.max() <= 1


@pytest.mark.parametrize("change, message", [
    ({"task": 2}, "task must be an int in 0..1"),
    ({"max_queries": 0}, "max_queries"),
    ({"support_x": torch.zeros(2, 6, 1)}, "image episodes"),
    ({"support_y": torch.zeros(2, 6)}, "integer"),
    ({"support_y": torch.tensor([[0, 0, 0, 1, 1, 2]] * 2)}, "same number of support"),
    ({"query_y": torch.tensor([[0] * 4 + [1] * 4 + [3] * 4] * 2)}, "0..N-1"),
])
def test_plot_episode_rejects_bad_input(change, message):
    from mlbook.plots import plot_episode

    episode = _image_episode()
    task = change.pop("task", 0)
    max_queries = change.pop("max_queries", None)
    with pytest.raises(ValueError, match=message):
        plot_episode(episode._replace(**change), task=task, fig=Figure(), max_queries=max_queries)
def _boxes(ax) -> dict[str, Rectangle]:
    """The block boxes of plot_trainable_blocks, by block name (their patch labels)."""
    return {p.get_label().split(": ")[0].removeprefix("block "): p
            for p in ax.patches if isinstance(p, Rectangle) and p.get_label().startswith("block ")}


def _state(box: Rectangle) -> str:
    colours = {matplotlib.colors.to_rgba(c): s for s, c in BLOCK_COLOURS.items()}
    return colours[tuple(box.get_facecolor())]


def test_plot_trainable_blocks_reads_the_state_from_requires_grad():
    model = Conv4(in_channels=1, hidden=4, num_classes=10, image_size=16)
    replace_head(model, 3)
    unfreeze_last(model, 2)
    model.features[0][1].weight.requires_grad_(True)  # one BatchNorm weight of block 0
    lrs = {g["name"]: g["lr"] for g in layerwise_param_groups(model, 1e-3, decay=0.5)}
    fig, ax = _axes()
    plot_trainable_blocks(ax, model, lrs=lrs, title="partial fine-tuning")
    fig.canvas.draw()
    boxes = _boxes(ax)
    assert list(boxes) == ["features.0", "features.1", "features.2", "features.3", "head"]
    assert {n: _state(b) for n, b in boxes.items()} == {
        "features.0": "partly trained", "features.1": "frozen", "features.2": "frozen",
        "features.3": "trained", "head": "trained"}
    texts = [t.get_text() for t in ax.texts]
    assert "head\n15" in texts  # 4 features x 3 classes + 3 biases
    # learning rates are written under the blocks that train, never under frozen ones
    assert {"lr 1e-3", "lr 5e-4"} <= set(texts) and "lr 2.5e-4" not in texts
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "trained", "partly trained", "frozen"]
    assert ax.get_title(loc="left") == "partial fine-tuning"


def test_plot_trainable_blocks_marks_the_cached_prefix_and_explicit_blocks():
    model = Conv4(in_channels=1, hidden=4, num_classes=3, image_size=16)
    freeze(model, "head")
    fig, ax = _axes()
    names = ["features.0", "features.1", "features.2", "features.3", "head"]
    plot_trainable_blocks(ax, model, block_names=names, cached=names[:4], legend=False)
    fig.canvas.draw()
    assert "outputs computed once and cached" in [t.get_text() for t in ax.texts]
    assert ax.get_legend() is None
    assert [_state(b) for b in _boxes(ax).values()] == ["frozen"] * 4 + ["trained"]


def test_plot_trainable_blocks_rejects_unknown_names():
    model = Conv4(in_channels=1, hidden=4, num_classes=3, image_size=16)
    _, ax = _axes()
    with pytest.raises(ValueError, match=r"lrs names unknown blocks \['layer4'\]"):
        plot_trainable_blocks(ax, model, lrs={"layer4": 1e-3})
    with pytest.raises(ValueError, match="cached names unknown blocks"):
        plot_trainable_blocks(ax, model, cached=["stem"])
    with pytest.raises(ValueError, match="no blocks with parameters"):
        plot_trainable_blocks(ax, torch.nn.ReLU())


def _documented(x: int) -> int:
    """A docstring that the listing leaves out."""
    return x + 1  # the body stays


def test_show_source_drops_the_docstring_and_renders_as_a_python_block():
    listing = plots.show_source(_documented, plots.show_source)
    assert "def _documented(x: int) -> int:" in listing and "return x + 1" in listing
    assert "leaves out" not in listing and "def show_source(" in listing
    assert listing._repr_markdown_().startswith("```python\ndef _documented")
    with pytest.raises(ValueError, match="at least one function"):
        plots.show_source()
