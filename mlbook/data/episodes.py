"""Few-shot episodes: N-way K-shot tasks with Q queries per class.

An episode batch holds ``T`` tasks. For each task ``N`` classes are drawn without
replacement, ``K + Q`` examples of each class are drawn without replacement (the first ``K``
are the support set, the other ``Q`` the query set, so the two never share an image), and
the classes get the labels ``0..N-1`` in a random order. Within a task the support set is
sorted by label (label 0's ``K`` examples, then label 1's, ...) and so is the query set.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch


class Episode(NamedTuple):
    """A batch of ``T`` few-shot tasks.

    Attributes
    ----------
    support_x
        ``[T, N*K, C, H, W]``.
    support_y
        int64 ``[T, N*K]``, values ``0..N-1``, sorted (each label ``K`` times).
    query_x
        ``[T, N*Q, C, H, W]``.
    query_y
        int64 ``[T, N*Q]``, values ``0..N-1``, sorted (each label ``Q`` times).

    Notes
    -----
    ``episode[i:j]`` (a slice) returns the :class:`Episode` of tasks ``i..j-1``; an integer
    index keeps tuple behaviour (``episode[0]`` is ``support_x``), so
    ``sx, sy, qx, qy = episode`` works too.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor

    def __getitem__(self, key):
        if isinstance(key, slice):
            return Episode(*(t[key] for t in self))
        return tuple.__getitem__(self, key)

    @property
    def num_tasks(self) -> int:
        """``T``, the number of tasks in the batch."""
        return self.support_x.shape[0]

    def to(self, device: torch.device | str | None, non_blocking: bool = False) -> Episode:
        """The same episode with every tensor on ``device``."""
        return Episode(*(t.to(device, non_blocking=non_blocking) for t in self))

    def chunks(self, batch_size: int) -> Iterator[Episode]:
        """Consecutive slices of at most ``batch_size`` tasks, e.g. to evaluate in pieces."""
        _check_positive(batch_size=batch_size)
        for start in range(0, self.num_tasks, batch_size):
            yield self[start : start + batch_size]


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_args(images: torch.Tensor, n_way: int, k_shot: int, q_queries: int,
                num_tasks: int) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 5:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(
            "images must be a tensor [classes, examples_per_class, C, H, W] (5 dimensions), "
            f"got {shape}; add a channel dimension with images.unsqueeze(2) if it is missing"
        )
    _check_positive(n_way=n_way, k_shot=k_shot, q_queries=q_queries, num_tasks=num_tasks)
    classes, per_class = images.shape[:2]
    if n_way > classes:
        raise ValueError(f"n_way={n_way} is more ways than the {classes} classes available")
    if k_shot + q_queries > per_class:
        raise ValueError(
            f"k_shot + q_queries = {k_shot} + {q_queries} = {k_shot + q_queries} exceeds the "
            f"{per_class} examples per class; support and query must be disjoint, so lower "
            "k_shot or q_queries"
        )


def _draw_indices(classes: int, per_class: int, n_way: int, shots: int, num_tasks: int,
                  generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Class ids ``[T, N]`` (label order) and example ids ``[T, N, K+Q]``, task after task.

    Tasks are drawn one after the other from ``generator``, so the first ``t`` tasks of a
    longer draw equal a draw of ``t`` tasks from the same seed.
    """
    cls = torch.empty(num_tasks, n_way, dtype=torch.long)
    ex = torch.empty(num_tasks, n_way, shots, dtype=torch.long)
    for t in range(num_tasks):
        cls[t] = torch.randperm(classes, generator=generator)[:n_way]
        ex[t] = torch.rand(n_way, per_class, generator=generator).argsort(dim=1)[:, :shots]
    return cls, ex


def _gather(images: torch.Tensor, cls: torch.Tensor, ex: torch.Tensor, k_shot: int,
            device: torch.device | str | None) -> Episode:
    num_tasks, n_way, shots = ex.shape
    q_queries = shots - k_shot
    dev = images.device
    picked = images[cls.to(dev)[:, :, None], ex.to(dev)]  # [T, N, K+Q, C, H, W]
    sample_shape = picked.shape[3:]
    support_x = picked[:, :, :k_shot].reshape(num_tasks, n_way * k_shot, *sample_shape)
    query_x = picked[:, :, k_shot:].reshape(num_tasks, n_way * q_queries, *sample_shape)
    labels = torch.arange(n_way, device=dev)
    support_y = labels.repeat_interleave(k_shot).expand(num_tasks, -1).contiguous()
    query_y = labels.repeat_interleave(q_queries).expand(num_tasks, -1).contiguous()
    episode = Episode(support_x, support_y, query_x, query_y)
    return episode.to(device) if device is not None else episode


def sample_episodes(images: torch.Tensor, n_way: int, k_shot: int, q_queries: int,
                    num_tasks: int, generator: torch.Generator | None = None,
                    device: torch.device | str | None = None) -> Episode:
    """Draw ``num_tasks`` random N-way K-shot tasks with Q queries per class.

    Parameters
    ----------
    images
        ``[classes, examples_per_class, C, H, W]``, e.g. an Omniglot split.
    n_way, k_shot, q_queries
        Classes per task, support examples per class, query examples per class.
    num_tasks
        ``T``, the number of tasks (the meta-batch size).
    generator
        A CPU ``torch.Generator`` for reproducible draws; default: PyTorch's global one.
    device
        Where to put the episode; default: the device of ``images``.

    Returns
    -------
    Episode
        support ``[T, N*K, C, H, W]`` / ``[T, N*K]``, query ``[T, N*Q, C, H, W]`` / ``[T, N*Q]``.

    Raises
    ------
    ValueError
        If ``images`` is not 5-dimensional, a count is not a positive int, ``n_way`` exceeds
        the number of classes or ``k_shot + q_queries`` the examples per class.
    """
    _check_args(images, n_way, k_shot, q_queries, num_tasks)
    cls, ex = _draw_indices(*images.shape[:2], n_way, k_shot + q_queries, num_tasks, generator)
    return _gather(images, cls, ex, k_shot, device)


class EpisodeSampler:
    """An endless, seeded stream of episode batches for training loops.

    ``for episode in EpisodeSampler(train, 5, 1, 15, num_tasks=32, seed=0): ...`` or
    ``next(sampler)``. Two samplers with the same arguments and seed yield the same stream;
    :meth:`reset` restarts it.
    """

    def __init__(self, images: torch.Tensor, n_way: int, k_shot: int, q_queries: int,
                 num_tasks: int, seed: int = 0, device: torch.device | str | None = None):
        _check_args(images, n_way, k_shot, q_queries, num_tasks)
        self.images, self.n_way, self.k_shot, self.q_queries = images, n_way, k_shot, q_queries
        self.num_tasks, self.seed, self.device = num_tasks, seed, device
        self.reset()

    def reset(self) -> None:
        """Restart the stream from ``seed``."""
        self.generator = torch.Generator().manual_seed(self.seed)

    def __iter__(self) -> EpisodeSampler:
        return self

    def __next__(self) -> Episode:
        return sample_episodes(self.images, self.n_way, self.k_shot, self.q_queries,
                               self.num_tasks, self.generator, self.device)


def fixed_episodes(images: torch.Tensor, n_way: int, k_shot: int, q_queries: int,
                   num_tasks: int, seed: int = 0,
                   device: torch.device | str | None = None) -> Episode:
    """The same ``num_tasks`` tasks on every call, so that every method is scored on them.

    Tasks are drawn one by one from ``torch.Generator().manual_seed(seed)``: the first ``t``
    tasks of a longer evaluation set are exactly the ``t`` tasks of a shorter one. To
    evaluate in pieces, slice (``episode[i:j]``), use :meth:`Episode.chunks` or
    :func:`iter_fixed_episodes`. The draws are reproducible for a given PyTorch version
    (PyTorch does not promise identical random streams across versions).
    """
    return sample_episodes(images, n_way, k_shot, q_queries, num_tasks,
                           torch.Generator().manual_seed(seed), device)


def iter_fixed_episodes(images: torch.Tensor, n_way: int, k_shot: int, q_queries: int,
                        num_tasks: int, batch_size: int, seed: int = 0,
                        device: torch.device | str | None = None) -> Iterator[Episode]:
    """The tasks of :func:`fixed_episodes`, in batches of ``batch_size`` (the last may be
    smaller), gathering only one batch of images at a time."""
    _check_args(images, n_way, k_shot, q_queries, num_tasks)
    _check_positive(batch_size=batch_size)
    cls, ex = _draw_indices(*images.shape[:2], n_way, k_shot + q_queries, num_tasks,
                            torch.Generator().manual_seed(seed))
    for start in range(0, num_tasks, batch_size):
        stop = start + batch_size
        yield _gather(images, cls[start:stop], ex[start:stop], k_shot, device)
