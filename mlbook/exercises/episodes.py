"""Checkers for the ``background`` chapter: drawing an episode, and a confidence interval."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from mlbook.data import sample_episodes
from mlbook.exercises._checking import (
    ExerciseFailed,
    as_tensor,
    call,
    compare,
    exercise,
    generator,
    require,
)
from mlbook.loops import mean_confidence_interval


def tagged_images(classes: int, per_class: int) -> torch.Tensor:
    """``[classes, per_class, 1, 2, 2]`` images whose pixels spell out (class, example)."""
    ids = torch.arange(classes * per_class, dtype=torch.float32).view(classes, per_class)
    return ids[:, :, None, None, None].expand(classes, per_class, 1, 2, 2).clone()


def _decode(images: torch.Tensor, per_class: int) -> list[tuple[int, int]]:
    ids = images.flatten(1)[:, 0].round().long()
    return [(int(i) // per_class, int(i) % per_class) for i in ids]


def _check_one(out, images: torch.Tensor, n_way: int, k_shot: int, q_queries: int,
               case: str) -> dict[int, int]:
    """Check one episode; return its label -> class map."""
    require(isinstance(out, tuple | list) and len(out) == 4,
            f"make_episode ({case}) should return (support_x, support_y, query_x, query_y), "
            f"got {type(out).__name__}" + (f" of length {len(out)}" if hasattr(out, "__len__")
                                          else ""))
    sx, sy, qx, qy = (as_tensor(t, name) for t, name in zip(
        out, ("support_x", "support_y", "query_x", "query_y"), strict=True))
    ref = sample_episodes(images, n_way, k_shot, q_queries, 1, generator(0))
    for got, want, name in ((sx, ref.support_x[0], "support_x"), (sy, ref.support_y[0],
                            "support_y"), (qx, ref.query_x[0], "query_x"),
                            (qy, ref.query_y[0], "query_y")):
        require(got.shape == want.shape, f"{name} ({case}) has shape {tuple(got.shape)}, "
                f"expected {tuple(want.shape)}")
    for name, labels in (("support_y", sy), ("query_y", qy)):
        require(not labels.is_floating_point() and labels.dtype != torch.bool,
                f"{name} ({case}) should hold integer class ids (int64), got {labels.dtype}")
    per_class = images.shape[1]
    per = {"support": (sy, k_shot), "query": (qy, q_queries)}
    for name, (labels, count) in per.items():
        counts = torch.bincount(labels.long().clamp(min=0), minlength=n_way)
        require(labels.min() >= 0 and labels.max() < n_way and bool((counts == count).all()),
                f"the {name} labels ({case}) should be 0..{n_way - 1}, each {count} time(s); got "
                f"counts {counts.tolist()}")
    label_to_class: dict[int, int] = {}
    seen: set[tuple[int, int]] = set()
    for name, x, labels in (("support", sx, sy), ("query", qx, qy)):
        for (cls, ex), label in zip(_decode(x, per_class), labels.tolist(), strict=True):
            require((cls, ex) not in seen,
                    f"image {ex} of class {cls} appears twice in the episode ({case}): a "
                    "query must never be a support image, and no image may repeat")
            seen.add((cls, ex))
            known = label_to_class.setdefault(label, cls)
            require(known == cls, f"label {label} ({case}) is given to images of two classes "
                    f"({known} and {cls}) in the {name} set: one label per class, and a query "
                    "must carry its class's support label")
    require(len(set(label_to_class.values())) == n_way,
            f"the episode ({case}) should draw {n_way} different classes")
    return label_to_class


@exercise("background", "Drawing an N-way K-shot episode", 20,
          "the N-way K-shot episode section; torch.randperm with a generator")
def check_episode_sampler(fn: Callable) -> int:
    """Check ``fn(images, n_way, k_shot, q_queries, generator) -> (sx, sy, qx, qy)``.

    ``images`` is ``[classes, per_class, C, H, W]``. The episode draws ``n_way`` classes at
    random, relabels them ``0..n_way-1`` in random order, and takes ``k_shot`` support and
    ``q_queries`` query images of each, all different: ``sx [N*K, C, H, W]``, ``sy [N*K]``
    int64, ``qx [N*Q, C, H, W]``, ``qy [N*Q]``. The randomness comes from ``generator``
    only (same seed, same episode).
    """
    cases = [(10, 6, 5, 1, 3, "5-way 1-shot"), (10, 6, 3, 2, 4, "3-way 2-shot"),
             (4, 3, 4, 1, 2, "every class of the data set in the episode"),
             (8, 2, 2, 1, 1, "one query per class")]
    for classes, per_class, n_way, k, q, case in cases:
        images = tagged_images(classes, per_class)
        out = call(fn, images.clone(), n_way, k, q, generator(1), what="your make_episode")
        _check_one(out, images, n_way, k, q, case)
    images = tagged_images(12, 5)
    first = call(fn, images.clone(), 5, 1, 2, generator(7), what="your make_episode")
    again = call(fn, images.clone(), 5, 1, 2, generator(7), what="your make_episode")
    require(all(torch.equal(as_tensor(a, "x"), as_tensor(b, "x"))
                for a, b in zip(first, again, strict=True)),
            "two calls with generators of the same seed gave different episodes: draw every "
            "random number from the generator argument (torch.randperm(..., generator=g))")
    maps = [_check_one(call(fn, images.clone(), 5, 1, 2, generator(seed),
                            what="your make_episode"), images, 5, 1, 2, f"seed {seed}")
            for seed in range(30)]
    class_sets = {tuple(sorted(m.values())) for m in maps}
    require(len(class_sets) > 1, "every episode drew the same classes: draw the N classes at "
            "random from all of them")
    require(any(m[0] != min(m.values()) for m in maps),
            "label 0 always goes to the class with the smallest index: the labels must be "
            "assigned in a random order each episode (the first exercise above says why)")
    return len(cases) + 32


@exercise("background", "A 95% confidence interval over episodes", 10,
          "the digits experiment; the sample standard deviation")
def check_confidence_interval(fn: Callable) -> int:
    """Check ``fn(values) -> (mean, half_width)`` for a 1-D NumPy array of scores.

    The interval is ``mean +- 1.96 * s / sqrt(n)`` with ``s`` the sample standard deviation
    (``ddof=1``), as :func:`mlbook.loops.mean_confidence_interval` computes it.
    """
    rng = np.random.default_rng(0)
    cases = [(np.array([0.0, 1.0]), "two values 0 and 1: mean 0.5, s = 0.7071, half-width "
                                    "1.96 * 0.7071 / sqrt(2) = 0.98"),
             (np.full(5, 0.6), "five equal values: half-width 0"),
             (rng.uniform(0.2, 1.0, size=30), "30 accuracies"),
             (rng.normal(60, 15, size=600), "600 episodes, in percent")]
    for values, case in cases:
        out = call(fn, values.copy(), what="your confidence_interval")
        require(isinstance(out, tuple | list) and len(out) == 2,
                f"confidence_interval should return (mean, half_width), got {out!r:.60}")
        mean, half = (float(v) for v in out)
        want_mean, want_half = mean_confidence_interval(values)
        n, s = len(values), values.std(ddof=1)
        compare(torch.tensor(mean), torch.tensor(want_mean), "the mean", case=case)
        mistakes = {
            "the half-width uses the population standard deviation (ddof=0); the sample "
            "standard deviation divides by n - 1": 1.96 * values.std() / np.sqrt(n),
            "the half-width is 1.96 s, without dividing by sqrt(n): that is the spread of "
            "single values, not of their mean": 1.96 * s,
            "the half-width is the standard error s / sqrt(n), without the factor 1.96":
                s / np.sqrt(n),
            "the half-width divides by n, not sqrt(n)": 1.96 * s / n,
        }
        if want_half == 0:
            mistakes = {}
        if not np.isfinite(half):
            raise ExerciseFailed(f"the half-width ({case}) is {half}")
        compare(torch.tensor(half), torch.tensor(want_half), "the half-width",
                {k: torch.tensor(v) for k, v in mistakes.items()}, case, rtol=1e-3)
    return len(cases)
