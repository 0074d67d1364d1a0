"""Learning in context: a transformer reads a task's support set and predicts its queries.

Model-based ("black-box") meta-learning (Santoro et al. 2016, Mishra et al. 2018, Garg et
al. 2022): nothing is fitted at test time. Each example becomes a *token*,

    support token  e(x_i) + l(y_i)          query token  e(x) + l(?)

where ``e`` embeds the input (through an encoder such as ``Conv4`` for images, or a linear
map of the raw features) and ``l`` embeds the label (a one-hot class id or a regression
target; ``?`` is a learnt "label unknown" marker). A transformer encoder reads the support
tokens and the query tokens together under one attention mask (:func:`attention_mask`):

* a support token attends to every support token,
* a query token attends to every support token and to itself, never to another query,

and a linear head turns each query token into logits (classification) or a prediction
(regression). There is no positional encoding, so a prediction does not depend on the order
of the support set; with the mask, it does not depend on the other queries either. Training
is ordinary supervised learning over episodes: the query loss, backpropagated through the
transformer and the encoder. What "adapting" to a task means here is reading its support set:
:meth:`InContextLearner.adapt` returns the support tokens (the task's context) and
:meth:`InContextLearner.predict` reads them with the queries.

``fast=True`` (the default) computes the encoder's training forward with the CPU interpreter
of :mod:`mlbook.meta._fast` where it knows the encoder, as :class:`~mlbook.meta.ProtoNet`
does; ``fast=False`` always calls ``encoder(x)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mlbook.meta._fast.encoder import EncoderCall
from mlbook.meta._tasks import check_episode, task_score


def attention_mask(num_support: int, num_query: int,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """Who may attend to whom in a sequence of ``num_support`` support tokens followed by
    ``num_query`` query tokens.

    Returns a bool tensor ``[S + Q, S + Q]``: entry ``[i, j]`` is ``True`` when token ``i``
    may attend to token ``j``. Support tokens see the support set; a query sees the support
    set and itself. (``nn.TransformerEncoder`` takes the complement: ``True`` = masked out.)
    """
    for name, value in (("num_support", num_support), ("num_query", num_query)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    if num_support == 0:
        raise ValueError("an in-context learner needs at least one support example to read")
    n = num_support + num_query
    allowed = torch.zeros(n, n, dtype=torch.bool, device=device)
    allowed[:, :num_support] = True
    allowed[num_support:, num_support:] = torch.eye(num_query, dtype=torch.bool, device=device)
    return allowed


class InContextLearner(nn.Module):
    """A transformer that predicts a task's queries from its support set, without gradient
    steps at test time.

    Parameters
    ----------
    encoder
        Maps inputs ``[B, *sample]`` to features ``[B, feature_dim]`` (e.g.
        ``Conv4(num_classes=None)`` for 28x28 Omniglot, 64 features); ``None`` uses the raw
        inputs, flattened (sinusoids: ``feature_dim=1``; linear functions: ``feature_dim=d``).
    feature_dim
        Number of features the encoder gives (or of raw input features).
    n_way
        Classification: the number of classes ``N`` of a task (labels ``0..N-1``; the logits
        are ``[Q, N]``). ``None``: regression, targets ``[.., target_dim]`` floats.
    target_dim
        Regression only: size of a target.
    d_model, num_layers, num_heads, dim_feedforward
        The transformer (``nn.TransformerEncoder``, pre-norm, no dropout);
        ``dim_feedforward`` defaults to ``4 * d_model``.
    fast
        Compute the encoder's training forward with the CPU interpreter where it applies
        (as :class:`~mlbook.meta.ProtoNet`); ``False``: always ``encoder(x)``.

    Notes
    -----
    Implements :class:`mlbook.meta.MetaLearner`. An encoder with ordinary batch norm uses batch
    statistics in training mode (over all the images of an episode batch) and running
    statistics in eval mode, where each query's prediction depends only on the support set
    and itself (:func:`mlbook.meta.evaluate` puts the learner in eval mode).
    """

    def __init__(self, encoder: nn.Module | None = None, feature_dim: int = 1,
                 n_way: int | None = None, target_dim: int = 1, d_model: int = 64,
                 num_layers: int = 3, num_heads: int = 4, dim_feedforward: int | None = None,
                 fast: bool = True) -> None:
        super().__init__()
        sizes = {"feature_dim": feature_dim, "target_dim": target_dim, "d_model": d_model,
                 "num_layers": num_layers, "num_heads": num_heads}
        if n_way is not None:
            sizes["n_way"] = n_way
        if dim_feedforward is not None:
            sizes["dim_feedforward"] = dim_feedforward
        for name, value in sizes.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if n_way is not None and n_way < 2:
            raise ValueError(f"n_way must be at least 2 classes (or None for regression), "
                             f"got {n_way}")
        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        if not isinstance(fast, bool):
            raise ValueError(f"fast must be True or False, got {fast!r}")
        self.encoder = encoder if encoder is not None else nn.Flatten()
        self.feature_dim, self.n_way, self.target_dim = feature_dim, n_way, target_dim
        self.fast = fast
        self.embed_input = nn.Linear(feature_dim, d_model)
        if n_way is not None:  # row n_way is "label unknown", the mark of a query token
            self.embed_label = nn.Embedding(n_way + 1, d_model)
            self.head = nn.Linear(d_model, n_way)
        else:
            self.embed_target = nn.Linear(target_dim, d_model)
            self.query_marker = nn.Parameter(0.02 * torch.randn(d_model))
            self.head = nn.Linear(d_model, target_dim)
        layer = nn.TransformerEncoderLayer(
            d_model, num_heads, dim_feedforward or 4 * d_model, dropout=0.0, batch_first=True,
            norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, num_layers, norm=nn.LayerNorm(d_model),
                                                 enable_nested_tensor=False)
        self._encode = EncoderCall(fast)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_encode"] = EncoderCall(self.fast)  # a cache, rebuilt on first use
        return state

    @property
    def classifies(self) -> bool:
        """Whether the learner classifies (``n_way`` given) or regresses."""
        return self.n_way is not None

    # -- tokens ------------------------------------------------------------------------------

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        z = self._encode(self.encoder, x)
        if z.ndim != 2 or z.shape[1] != self.feature_dim:
            raise ValueError(
                f"the encoder gives features of shape {tuple(z.shape)}, the learner was built "
                f"for [B, {self.feature_dim}] (feature_dim={self.feature_dim}); build it with "
                "the encoder's output size, or check the inputs' shape"
            )
        return z

    def _check_targets(self, support_y: torch.Tensor, query_y: torch.Tensor | None = None) -> None:
        """Class ids ``0..n_way-1`` for a classifier, float targets for a regressor."""
        for name, y in (("support_y", support_y), ("query_y", query_y)):
            if y is None:
                continue
            if self.classifies:
                if y.is_floating_point():
                    raise ValueError(
                        f"this learner classifies (n_way={self.n_way}): {name} must hold "
                        "integer class ids; for regression build InContextLearner(..., "
                        "n_way=None)")
                if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.n_way):
                    raise ValueError(
                        f"{name} holds class ids {int(y.min())}..{int(y.max())}, the learner "
                        f"was built for {self.n_way} ways (ids 0..{self.n_way - 1}); relabel "
                        "each task's classes 0..N-1 or build it with a larger n_way")
            else:
                if not y.is_floating_point():
                    raise ValueError(
                        f"this learner regresses (n_way=None): {name} must hold float targets "
                        f"[..., {self.target_dim}], got {y.dtype} (class labels?); for "
                        "classification build InContextLearner(..., n_way=N)")
                if y.shape[-1] != self.target_dim:
                    raise ValueError(
                        f"{name} has targets of size {y.shape[-1]}, the learner was built for "
                        f"target_dim={self.target_dim}")

    def _support_tokens(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``[..., S, d_model]`` from features ``[..., S, F]`` and labels."""
        label = (self.embed_label(labels) if self.classifies
                 else self.embed_target(labels.to(features.dtype)))
        return self.embed_input(features) + label

    def _query_tokens(self, features: torch.Tensor) -> torch.Tensor:
        """``[..., Q, d_model]``: the input's embedding plus the "label unknown" mark."""
        if self.classifies:
            marker = self.embed_label.weight[self.n_way]
        else:
            marker = self.query_marker
        return self.embed_input(features) + marker

    def _read(self, support_tokens: torch.Tensor, query_tokens: torch.Tensor) -> torch.Tensor:
        """The transformer over ``[T, S + Q, d]`` under :func:`attention_mask`; the head's
        output at the query positions, ``[T, Q, out]``."""
        s, q = support_tokens.shape[-2], query_tokens.shape[-2]
        tokens = torch.cat([support_tokens, query_tokens], dim=-2)
        blocked = ~attention_mask(s, q, device=tokens.device)
        return self.head(self.transformer(tokens, mask=blocked)[..., s:, :])

    # -- the learner interface ---------------------------------------------------------------

    def forward_episode(self, episode) -> torch.Tensor:
        """Predictions ``[T, Q, out]`` for every query of every task (logits for a
        classifier), with all the tasks' images in one encoder batch."""
        check_episode(episode)
        self._check_targets(episode.support_y, episode.query_y)
        sx, qx = episode.support_x, episode.query_x
        num_tasks, s, q = sx.shape[0], sx.shape[1], qx.shape[1]
        z = self._features(torch.cat([sx.flatten(0, 1), qx.flatten(0, 1)]))
        zs = z[: num_tasks * s].view(num_tasks, s, -1)
        zq = z[num_tasks * s:].view(num_tasks, q, -1)
        return self._read(self._support_tokens(zs, episode.support_y), self._query_tokens(zq))

    def meta_parameters(self) -> list[torch.Tensor]:
        """What the outer optimizer trains: encoder, embeddings, transformer and head."""
        return [p for p in self.parameters() if p.requires_grad]

    def loss(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy (classification) or mean squared error (regression)."""
        if self.classifies:
            return F.cross_entropy(predictions.flatten(0, -2), targets.flatten())
        return F.mse_loss(predictions, targets.to(predictions.dtype))

    def meta_loss(self, episode) -> tuple[torch.Tensor, float]:
        """Mean query loss over the tasks (a tensor to ``backward()``) and the mean score."""
        out = self.forward_episode(episode)
        scores = [task_score(out[t], episode.query_y[t]) for t in range(out.shape[0])]
        return self.loss(out, episode.query_y), float(torch.stack(scores).mean())

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor,
              steps: int | None = None) -> torch.Tensor:
        """The task's context: its support tokens ``[S, d_model]`` (no gradient step;
        ``steps`` is ignored)."""
        if support_x.ndim < 1 or support_x.shape[0] == 0:
            raise ValueError("the support set is empty: an in-context learner needs at least "
                             "one support example to read")
        expected = 1 if self.classifies else 2
        if support_y.ndim != expected or support_y.shape[0] != support_x.shape[0]:
            shape = "[S] class ids" if self.classifies else f"[S, {self.target_dim}] targets"
            raise ValueError(f"support_y must be {shape} matching support_x "
                             f"{tuple(support_x.shape)}, got {tuple(support_y.shape)}")
        self._check_targets(support_y)
        return self._support_tokens(self._features(support_x), support_y)

    def predict(self, adapted: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Predictions ``[B, out]`` for ``x [B, ...]`` given a context from :meth:`adapt`:
        logits ``[B, n_way]`` for a classifier, targets ``[B, target_dim]`` for a regressor.
        Each row depends only on the context and its own input."""
        d_model = self.embed_input.out_features
        if adapted.ndim != 2 or adapted.shape[1] != d_model:
            raise ValueError(f"adapted must be the context [S, {d_model}] that adapt() returns, "
                             f"got {tuple(adapted.shape)}")
        if x.ndim < 1 or x.shape[0] == 0:
            raise ValueError("x is empty: give at least one query")
        queries = self._query_tokens(self._features(x))
        return self._read(adapted.unsqueeze(0), queries.unsqueeze(0))[0]

    @torch.no_grad()
    def task_scores(self, episode, steps: int | None = None) -> torch.Tensor:
        """Query score per task ``[T]``: accuracy or MSE (``steps`` is ignored)."""
        out = self.forward_episode(episode)
        return torch.stack([task_score(out[t], episode.query_y[t])
                            for t in range(out.shape[0])]).float().cpu()
