"""The Conditional Neural Process (Garnelo et al. 2018): the simplest model-based learner.

An encoder ``h`` maps each support pair to a representation, and their mean summarises the
task; a decoder ``g`` maps a query input and the summary to a Gaussian over its target:

    r_i = h(x_i, y_i),     r = (1 / K) * sum_i r_i,     (mu, sigma) = g(x, r).

The mean makes the summary independent of the order of the support set, and each query is
decoded on its own. Training maximises the Gaussian log-likelihood of the query targets over
tasks (Garnelo et al. 2018, eq. 4); ``sigma = 0.1 + 0.9 * softplus(.)`` (their bound, so the
likelihood cannot grow without end on a point). The predicted ``sigma`` is the model's
uncertainty: wide between and beyond the support points, narrow near them.

Implements :class:`mlbook.meta.MetaLearner` for regression: :meth:`adapt` returns the
summary ``r``, :meth:`predict` the predicted mean, :meth:`predict_distribution` the mean and
standard deviation; scores are mean squared errors of the mean.
"""

from __future__ import annotations

import torch
from torch import nn

from mlbook.meta._tasks import check_episode, task_score


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def gaussian_nll(mean: torch.Tensor, std: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of ``target`` under ``N(mean, std^2)``, per element."""
    return (torch.log(std) + 0.5 * ((target - mean) / std) ** 2
            + 0.5 * torch.log(torch.tensor(2 * torch.pi, dtype=mean.dtype))).mean()


class ConditionalNeuralProcess(nn.Module):
    """A Conditional Neural Process for regression tasks.

    Parameters
    ----------
    x_dim, y_dim
        Sizes of an input and of a target (sinusoids: 1 and 1).
    r_dim
        Size of the task summary ``r``.
    hidden, layers
        Width and number of hidden layers of the encoder and of the decoder MLPs.
    """

    def __init__(self, x_dim: int = 1, y_dim: int = 1, r_dim: int = 128, hidden: int = 128,
                 layers: int = 3) -> None:
        super().__init__()
        for name, value in (("x_dim", x_dim), ("y_dim", y_dim), ("r_dim", r_dim),
                            ("hidden", hidden), ("layers", layers)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.x_dim, self.y_dim = x_dim, y_dim
        self.encoder = _mlp([x_dim + y_dim] + [hidden] * layers + [r_dim])
        self.decoder = _mlp([x_dim + r_dim] + [hidden] * layers + [2 * y_dim])

    def _check(self, x: torch.Tensor, name: str, size: int, what: str) -> None:
        if x.ndim < 2 or x.shape[-1] != size:
            raise ValueError(f"{name} must be [..., {size}] ({what} of size {size}), got "
                             f"{tuple(x.shape)}")

    def _check_targets(self, y: torch.Tensor, name: str) -> None:
        if not y.is_floating_point():
            raise ValueError(f"the CNP regresses: {name} must hold float targets [..., "
                             f"{self.y_dim}], got {y.dtype} (class labels?)")
        self._check(y, name, self.y_dim, "targets")

    def summarise(self, support_x: torch.Tensor, support_y: torch.Tensor) -> torch.Tensor:
        """``r [..., r_dim]``: the mean of ``h(x_i, y_i)`` over the support set (dim -2)."""
        return self.encoder(torch.cat([support_x, support_y], dim=-1)).mean(dim=-2)

    def distribution(self, r: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation ``[..., Q, y_dim]`` for inputs ``x [..., Q, x_dim]``."""
        r = r.unsqueeze(-2).expand(*x.shape[:-1], r.shape[-1])
        mean, raw = self.decoder(torch.cat([x, r], dim=-1)).chunk(2, dim=-1)
        return mean, 0.1 + 0.9 * nn.functional.softplus(raw)

    def meta_parameters(self) -> list[torch.Tensor]:
        """What the outer optimizer trains: encoder and decoder."""
        return [p for p in self.parameters() if p.requires_grad]

    def _episode(self, episode) -> tuple[torch.Tensor, torch.Tensor]:
        check_episode(episode)
        for name in ("support_x", "query_x"):
            self._check(getattr(episode, name), f"episode.{name}", self.x_dim, "inputs")
        for name in ("support_y", "query_y"):
            self._check_targets(getattr(episode, name), f"episode.{name}")
        return self.distribution(self.summarise(episode.support_x, episode.support_y),
                                 episode.query_x)

    def meta_loss(self, episode) -> tuple[torch.Tensor, float]:
        """Gaussian negative log-likelihood of the query targets, and the mean query MSE."""
        mean, std = self._episode(episode)
        scores = [task_score(mean[t], episode.query_y[t]) for t in range(mean.shape[0])]
        return gaussian_nll(mean, std, episode.query_y), float(torch.stack(scores).mean())

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor,
              steps: int | None = None) -> torch.Tensor:
        """The task summary ``r [r_dim]`` (no gradient step; ``steps`` is ignored)."""
        self._check(support_x, "support_x", self.x_dim, "inputs")
        self._check_targets(support_y, "support_y")
        if support_x.shape[0] == 0:
            raise ValueError("the support set is empty: the CNP needs at least one support "
                             "pair to summarise")
        if support_y.shape[:-1] != support_x.shape[:-1]:
            raise ValueError(f"support_x {tuple(support_x.shape)} and support_y "
                             f"{tuple(support_y.shape)} disagree on the number of examples")
        return self.summarise(support_x, support_y)

    def predict_distribution(self, adapted: torch.Tensor,
                             x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted mean and standard deviation ``[B, y_dim]`` for ``x [B, x_dim]``."""
        self._check(x, "x", self.x_dim, "inputs")
        return self.distribution(adapted, x)

    def predict(self, adapted: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Predicted mean ``[B, y_dim]`` for ``x [B, x_dim]`` given the summary ``adapted``."""
        return self.predict_distribution(adapted, x)[0]

    @torch.no_grad()
    def task_scores(self, episode, steps: int | None = None) -> torch.Tensor:
        """Query MSE of the predicted mean, per task ``[T]`` (``steps`` is ignored)."""
        mean, _ = self._episode(episode)
        return torch.stack([task_score(mean[t], episode.query_y[t])
                            for t in range(mean.shape[0])]).float().cpu()
