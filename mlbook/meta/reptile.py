"""Reptile (Nichol, Achiam & Schulman 2018): meta-learning without second derivatives.

For each task, start from ``theta`` and take ``k`` ordinary optimizer steps on the task's
support set, reaching ``phi_t``. Then move the initialisation towards the adapted weights:

    theta <- theta + epsilon * mean_t (phi_t - theta).

To fit the common learner protocol (``loss.backward(); optimizer.step()``),
:meth:`Reptile.meta_loss` returns a tensor whose backward sets ``theta.grad = theta -
mean_t phi_t``; an outer ``torch.optim.SGD(lr=epsilon)`` then performs exactly the update
above (other outer optimizers, e.g. Adam, treat it as a gradient, a common variant).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mlbook.meta._tasks import (
    AttachGradients,
    accuracy,
    check_episode,
    map_task_chunks,
    resolve_threads,
)
from mlbook.meta.functional import FunctionalModel, Params
from mlbook.meta.maml import _check_steps


class Reptile(nn.Module):
    """Reptile around any model.

    Parameters
    ----------
    model
        The network whose initialisation is meta-learned. Batch norm layers normalise with
        batch statistics (see :mod:`mlbook.meta.functional`).
    inner_lr
        Step size of the inner optimizer.
    inner_steps
        Inner steps ``k`` per task (>= 1); test time may use more.
    inner_optimizer
        ``"sgd"`` or ``"adam"`` (Nichol et al. use Adam with ``beta1 = 0``: ``betas``).
    betas, eps
        Adam's hyper-parameters.
    loss_fn
        Task loss, ``F.cross_entropy`` by default.
    threads
        Task threads (``None``: ``torch.get_num_threads()`` on a CPU), as in MAML.
    """

    def __init__(self, model: nn.Module, inner_lr: float = 1e-3, inner_steps: int = 5,
                 inner_optimizer: str = "adam", betas: tuple[float, float] = (0.0, 0.999),
                 eps: float = 1e-8,
                 loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
                 threads: int | None = None) -> None:
        super().__init__()
        if not isinstance(inner_lr, (int, float)) or isinstance(inner_lr, bool) or not inner_lr > 0:
            raise ValueError(f"inner_lr must be a positive number, got {inner_lr!r}")
        if inner_optimizer not in ("sgd", "adam"):
            raise ValueError(f"inner_optimizer must be 'sgd' or 'adam', got {inner_optimizer!r}")
        self.model = model
        self.inner_lr = float(inner_lr)
        self.inner_steps = _check_steps(inner_steps, "inner_steps")
        self.inner_optimizer = inner_optimizer
        self.betas, self.eps = betas, eps
        self.loss_fn = loss_fn
        self.threads = threads
        self.fmodel = FunctionalModel(model)

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor,
              steps: int | None = None) -> Params:
        """``phi``: ``steps`` inner optimizer steps from ``theta`` on one task (detached)."""
        steps = _check_steps(self.inner_steps if steps is None else steps, "steps")
        phi = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        m = {n: torch.zeros_like(p) for n, p in phi.items()}
        v = {n: torch.zeros_like(p) for n, p in phi.items()}
        beta1, beta2 = self.betas
        for step in range(1, steps + 1):
            leaves = {n: p.requires_grad_() for n, p in phi.items()}
            with torch.enable_grad():
                loss = self.loss_fn(self.fmodel(leaves, support_x), support_y)
                grads = torch.autograd.grad(loss, list(leaves.values()))
            with torch.no_grad():
                for (name, p), g in zip(leaves.items(), grads, strict=True):
                    if self.inner_optimizer == "sgd":
                        phi[name] = p - self.inner_lr * g
                        continue
                    # Adam (Kingma & Ba) with bias correction, as torch.optim.Adam.
                    m[name] = beta1 * m[name] + (1 - beta1) * g
                    v[name] = beta2 * v[name] + (1 - beta2) * g * g
                    m_hat = m[name] / (1 - beta1**step)
                    v_hat = v[name] / (1 - beta2**step)
                    phi[name] = p - self.inner_lr * m_hat / (v_hat.sqrt() + self.eps)
        return {n: p.detach() for n, p in phi.items()}

    def predict(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """The model's output on ``x`` at parameters ``params``."""
        return self.fmodel(params, x)

    def _per_task(self, episode, steps: int | None, want_delta: bool):
        """Per task: (phi - theta summed over the chunk, query loss sum, query accuracies)."""
        theta = dict(self.model.named_parameters())

        def chunk(tasks: range):
            delta = {n: torch.zeros_like(p) for n, p in theta.items()}
            losses, accs = [], []
            for t in tasks:
                phi = self.adapt(episode.support_x[t], episode.support_y[t], steps)
                with torch.no_grad():
                    out = self.fmodel(phi, episode.query_x[t])
                    losses.append(self.loss_fn(out, episode.query_y[t]))
                    accs.append(accuracy(out, episode.query_y[t]))
                    if want_delta:
                        for n in delta:
                            delta[n] += phi[n] - theta[n]
            return delta, losses, accs

        num_tasks = episode.support_x.shape[0]
        device = next(iter(theta.values())).device
        threads = resolve_threads(self.threads, num_tasks, device, self.fmodel.thread_safe)
        return map_task_chunks(chunk, num_tasks, threads)

    def meta_loss(self, episode) -> tuple[torch.Tensor, float]:
        """Mean query loss after adaptation, whose backward gives ``theta - mean_t phi_t``.

        Returns ``(loss, accuracy)``; the accuracy is the query accuracy after adaptation.
        """
        num_tasks = check_episode(episode)
        results = self._per_task(episode, None, want_delta=True)
        names = [n for n, _ in self.model.named_parameters()]
        delta = {n: sum(r[0][n] for r in results) / num_tasks for n in names}
        losses = [x for r in results for x in r[1]]
        accs = [x for r in results for x in r[2]]
        value = torch.stack(losses).mean()
        params = [p for _, p in self.model.named_parameters()]
        # d(loss)/d(theta) := theta - mean phi = -mean delta, so SGD(lr=eps) is Reptile's step.
        loss = AttachGradients.apply(value, [-delta[n] for n in names], *params)
        return loss, float(torch.stack(accs).mean())

    def evaluate_episode(self, episode, inner_steps: int | None = None) -> torch.Tensor:
        """Per-task query accuracy ``[T]`` after ``inner_steps`` inner steps (default: k)."""
        check_episode(episode)
        results = self._per_task(episode, inner_steps, want_delta=False)
        return torch.stack([x for r in results for x in r[2]]).cpu()
