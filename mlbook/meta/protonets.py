"""Prototypical Networks (Snell, Swersky & Zemel 2017).

An encoder ``f`` maps images to embeddings. For a task, each class ``c`` gets a prototype,
the mean embedding of its support examples,

    p_c = (1 / K) * sum_{i : y_i = c} f(x_i),

and a query ``x`` is classified by a softmax over negative squared Euclidean distances,
``logits_c(x) = -||f(x) - p_c||^2``. Training minimises the query cross-entropy over episodes;
nothing adapts at test time (no inner loop), which is why it is fast.

``fast=True`` (the default) runs the encoder's training forward through the CPU interpreter
of :mod:`mlbook.meta._fast` where it knows the encoder (``Conv4``, ``nn.Sequential`` stacks of
common layers), with the same batch-norm running averages: same function, about 2.5x faster
for ``Conv4`` on a 60-way episode (``benchmarks/results/protonet_step.md``). ``fast=False``
always calls ``encoder(x)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mlbook.meta._fast.encoder import EncoderCall
from mlbook.meta._tasks import accuracy, check_episode


def prototypes(embeddings: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
    """Class means of the support embeddings.

    Parameters
    ----------
    embeddings
        ``[S, D]`` support embeddings.
    labels
        int64 ``[S]`` with values ``0..n_way-1``, every class present at least once.
    n_way
        Number of classes ``N``.

    Returns
    -------
    Tensor ``[N, D]``
        Row ``c`` is the mean embedding of class ``c``.

    Raises
    ------
    ValueError
        If a label is out of range or a class has no support example.
    """
    if labels.ndim != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"labels must be [S] matching embeddings [S, D], got {tuple(labels.shape)} and "
            f"{tuple(embeddings.shape)}"
        )
    if labels.is_floating_point() or labels.min() < 0 or labels.max() >= n_way:
        raise ValueError(f"labels must be integers in 0..{n_way - 1}, got {labels.tolist()}")
    counts = torch.bincount(labels, minlength=n_way)
    if (counts == 0).any():
        missing = (counts == 0).nonzero().flatten().tolist()
        raise ValueError(f"classes {missing} have no support example; every class needs one")
    sums = torch.zeros(n_way, embeddings.shape[1], dtype=embeddings.dtype, device=embeddings.device)
    sums.index_add_(0, labels, embeddings)
    return sums / counts.unsqueeze(1).to(embeddings.dtype)


def squared_distances(queries: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
    """``[Q, N]`` matrix of ``||queries[q] - protos[c]||^2``; ``queries [Q, D]``, ``protos [N, D]``.

    Computed from differences rather than ``|a|^2 - 2ab + |b|^2``, which cancels badly when
    a query sits close to a prototype; with ``D = 64`` and ``N = 5`` it costs nothing.
    """
    return (queries.unsqueeze(1) - protos.unsqueeze(0)).pow(2).sum(-1)


class ProtoNet(nn.Module):
    """Prototypical Networks around an embedding network.

    Parameters
    ----------
    encoder
        Maps ``[B, C, H, W]`` to ``[B, D]``, e.g. ``Conv4(num_classes=None)`` (64 features on
        28x28 Omniglot). Ordinary batch norm (running statistics) is fine: the encoder is put
        in eval mode for evaluation.
    fast
        ``True``: in training mode on a CPU, compute the encoder's forward with the
        interpreter of :mod:`mlbook.meta._fast` (the same embeddings and batch-norm running
        averages, faster) when it knows the encoder, and ``encoder(x)`` otherwise;
        ``False``: always ``encoder(x)``.

    Notes
    -----
    Implements the learner interface (:class:`mlbook.meta.MetaLearner`): what
    :meth:`adapt` returns for a task is its class prototypes, and :meth:`predict` scores
    inputs against them.
    """

    def __init__(self, encoder: nn.Module, fast: bool = True) -> None:
        super().__init__()
        if not isinstance(fast, bool):
            raise ValueError(f"fast must be True or False, got {fast!r}")
        self.encoder = encoder
        self.fast = fast
        self._encoder_call = EncoderCall(fast)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_encoder_call"] = EncoderCall(self.fast)  # a cache, rebuilt on first use
        return state

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        """``self.encoder(x)``, by the fast path where it applies (see ``fast``)."""
        return self._encoder_call(self.encoder, x)

    def _embed_episode(self, episode) -> tuple[torch.Tensor, torch.Tensor]:
        """All support and query images of all tasks in one encoder batch."""
        sx, qx = episode.support_x, episode.query_x
        num_tasks, s, q = sx.shape[0], sx.shape[1], qx.shape[1]
        z = self._encode(torch.cat([sx.flatten(0, 1), qx.flatten(0, 1)]))
        if z.ndim != 2:
            raise ValueError(f"the encoder must return [B, D] embeddings, got {tuple(z.shape)}")
        return z[: num_tasks * s].view(num_tasks, s, -1), z[num_tasks * s :].view(num_tasks, q, -1)

    def logits(self, episode) -> torch.Tensor:
        """``[T, Q, N]``: negative squared distances of each query to its task's prototypes."""
        check_episode(episode)
        if episode.support_y.is_floating_point():
            raise ValueError("ProtoNet classifies: support_y must hold integer class ids")
        n_way = int(episode.support_y.max()) + 1
        zs, zq = self._embed_episode(episode)
        return torch.stack([
            -squared_distances(zq[t], prototypes(zs[t], episode.support_y[t], n_way))
            for t in range(zs.shape[0])
        ])

    def meta_parameters(self) -> list[torch.Tensor]:
        """What the outer optimizer trains: the encoder's parameters."""
        return [p for p in self.encoder.parameters() if p.requires_grad]

    def meta_loss(self, episode) -> tuple[torch.Tensor, float]:
        """Mean query cross-entropy over the tasks (a tensor to ``backward()``) and accuracy."""
        logits = self.logits(episode)
        loss = F.cross_entropy(logits.flatten(0, 1), episode.query_y.flatten())
        return loss, float(accuracy(logits, episode.query_y))

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor,
              steps: int | None = None) -> torch.Tensor:
        """One task's class prototypes ``[N, D]`` (``steps`` is ignored: nothing trains)."""
        if support_y.is_floating_point():
            raise ValueError("ProtoNet classifies: support_y must hold integer class ids")
        return prototypes(self._encode(support_x), support_y, int(support_y.max()) + 1)

    def predict(self, adapted: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, N]``: negative squared distances of ``x``'s embeddings to the
        prototypes ``adapted`` (from :meth:`adapt`)."""
        return -squared_distances(self._encode(x), adapted)

    @torch.no_grad()
    def classify(self, support_x: torch.Tensor, x: torch.Tensor,
                 support_y: torch.Tensor | None = None) -> torch.Tensor:
        """Class ids ``[B]`` of ``x``: the nearest prototype of one task's support set.

        The test-time rule in one call, in eval mode (the module's mode is restored).
        ``support_y=None`` makes every support image its own class, as in Lake's one-shot
        runs: ``score_one_shot_runs(protonet.classify, runs)``
        (:func:`mlbook.data.score_one_shot_runs`).
        """
        if support_y is None:
            support_y = torch.arange(len(support_x), device=support_x.device)
        was_training = self.training
        self.eval()
        try:
            return self.predict(self.adapt(support_x, support_y), x).argmax(1)
        finally:
            self.train(was_training)

    @torch.no_grad()
    def task_scores(self, episode, steps: int | None = None) -> torch.Tensor:
        """Query accuracy per task ``[T]`` (``steps`` is ignored: nothing adapts)."""
        logits = self.logits(episode)
        return (logits.argmax(-1) == episode.query_y).float().mean(1).cpu()


def embed_classes(encoder: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Every image of ``images [classes, per_class, C, H, W]`` embedded once, in eval mode.

    Returns ``[classes, per_class, D, 1, 1]``: "images" of ``D`` channels, so that
    :func:`mlbook.data.fixed_episodes` draws from it exactly the episodes it draws from
    ``images``, and ``ProtoNet(nn.Flatten())`` scores them. A ProtoNet's embedding of an image
    does not depend on the episode it appears in (eval-mode batch norm uses running
    statistics), so scoring many episodes this way gives the scores of ``ProtoNet(encoder)``
    on the images at the cost of one pass over the images.
    """
    if images.ndim != 5:
        raise ValueError(f"images must be [classes, per_class, C, H, W], got {tuple(images.shape)}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    was_training = encoder.training
    encoder.eval()
    flat = images.flatten(0, 1)
    try:
        with torch.no_grad():
            z = torch.cat([encoder(flat[start:start + batch_size])
                           for start in range(0, len(flat), batch_size)])
    finally:
        encoder.train(was_training)
    return z.reshape(*images.shape[:2], -1, 1, 1)
