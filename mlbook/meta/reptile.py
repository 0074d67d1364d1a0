"""Reptile (Nichol, Achiam & Schulman 2018): meta-learning without second derivatives.

For each task, start from ``theta`` and take ``k`` ordinary optimizer steps on the task's
support set, reaching ``phi_t`` (Nichol et al. train each step on a fresh minibatch of the
support set, ``inner_batch``; reusing one batch turns Reptile's first-order term into a
gradient-variance term, see the ``maml_math`` chapter). Then move the initialisation
towards the adapted weights:

    theta <- theta + epsilon * mean_t (phi_t - theta).

To fit the common learner interface (``loss.backward(); optimizer.step()``),
:meth:`Reptile.meta_loss` returns a tensor whose backward sets ``theta.grad = theta -
mean_t phi_t``; an outer ``torch.optim.SGD(lr=epsilon)`` then performs exactly the update
above (other outer optimizers, e.g. Adam, treat it as a gradient, a common variant).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mlbook.meta._fast.runner import make_runner
from mlbook.meta._fast.tasks import resolve_threads
from mlbook.meta._tasks import check_episode, task_score
from mlbook.meta.functional import Params
from mlbook.meta.inner_loop import check_lr, check_steps
from mlbook.meta.learner import check_batch_norm

INNER_OPTIMIZERS = ("sgd", "adam")  # torch.optim.SGD, torch.optim.Adam (with betas)


class Reptile(nn.Module):
    """Reptile around any model.

    Parameters
    ----------
    model
        The network whose initialisation is meta-learned; batch norm must use batch
        statistics (``track_running_stats=False``; the rule of :mod:`mlbook.meta.learner`).
    inner_lr
        Step size of the inner optimizer.
    inner_steps
        Inner steps ``k`` per task (>= 1); test time may use more.
    inner_optimizer
        ``"sgd"`` or ``"adam"`` (``torch.optim``; Nichol et al. use Adam with ``beta1 = 0``:
        ``betas``).
    betas
        Adam's ``betas``.
    loss_fn
        Task loss: ``F.cross_entropy`` (scores are accuracies) or e.g. ``F.mse_loss``
        (regression; scores are mean squared errors).
    fast
        Tasks over threads with the interpreted CPU-layout forward (as ``MAML(fast=True)``);
        ``False`` loops over tasks with the module's own forward.
    threads
        Task threads for the fast path (``None``: ``torch.get_num_threads()`` on a CPU).
    inner_batch
        Examples per inner step in training (Nichol et al.'s ``--inner-batch``): step ``i``
        takes the next ``inner_batch`` examples of the task's support set in a random order,
        reshuffled when it is used up, so successive steps see different examples. ``None``:
        the whole support set at every step. :meth:`adapt` at test time, and
        :meth:`task_scores`, always use the whole support set. The orders come from torch's
        global generator, task by task, so under ``torchrun`` (each rank draws for its own
        shard) a run is reproducible for a given number of processes but differs from the
        one-process run.
    """

    def __init__(self, model: nn.Module, inner_lr: float = 1e-3, inner_steps: int = 5,
                 inner_optimizer: str = "adam", betas: tuple[float, float] = (0.0, 0.999),
                 loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
                 fast: bool = True, threads: int | None = None,
                 inner_batch: int | None = None) -> None:
        super().__init__()
        check_lr(inner_lr)
        if inner_batch is not None and (isinstance(inner_batch, bool)
                                        or not isinstance(inner_batch, int) or inner_batch < 1):
            raise ValueError(f"inner_batch must be a positive int or None (the whole support "
                             f"set), got {inner_batch!r}")
        if inner_optimizer not in INNER_OPTIMIZERS:
            raise ValueError(f"inner_optimizer must be 'sgd' or 'adam', got {inner_optimizer!r}")
        check_batch_norm(model, "Reptile")
        if threads is not None:
            resolve_threads(threads, 1, torch.device("cpu"))  # validates the value
        self.model = model
        self.inner_lr = float(inner_lr)
        self.inner_steps = check_steps(inner_steps, "inner_steps")
        self.inner_optimizer = inner_optimizer
        self.betas = betas
        self.loss_fn = loss_fn
        self.fast, self.threads = bool(fast), threads
        self.inner_batch = inner_batch
        # How the tasks are run is decided here, once (mlbook.meta._fast.runner).
        self.runner = make_runner(model, self.fast, threads, vectorize=False)
        self.forward_fn = self.runner.forward_fn

    def meta_parameters(self) -> list[torch.Tensor]:
        """What the outer optimizer trains: the model's parameters."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def _new_inner_optimizer(self, params: list[torch.Tensor]) -> torch.optim.Optimizer:
        if self.inner_optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.inner_lr)
        return torch.optim.Adam(params, lr=self.inner_lr, betas=self.betas)

    def inner_batches(self, num_examples: int, steps: int) -> list[torch.Tensor] | None:
        """Indices of the support examples each inner step trains on, drawn from torch's
        global generator: ``steps`` consecutive slices of ``inner_batch`` from concatenated
        random permutations (Nichol et al.'s ``_mini_batches`` without replacement).
        ``None`` when every step takes the whole support set."""
        if self.inner_batch is None:
            return None
        if self.inner_batch > num_examples:
            raise ValueError(f"inner_batch={self.inner_batch} is larger than the support set "
                             f"({num_examples} examples): lower it, or sample more shots")
        epochs = -(-steps * self.inner_batch // num_examples)
        order = torch.cat([torch.randperm(num_examples) for _ in range(epochs)])
        return list(order[:steps * self.inner_batch].split(self.inner_batch))

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor,
              steps: int | None = None,
              batches: list[torch.Tensor] | None = None) -> Params:
        """``phi``: ``steps`` inner optimizer steps from ``theta`` on one task (detached).

        ``batches`` (from :meth:`inner_batches`) picks the support examples of each step;
        ``None`` trains every step on the whole support set.
        """
        steps = check_steps(self.inner_steps if steps is None else steps, "steps")
        if batches is not None and len(batches) != steps:
            raise ValueError(f"got {len(batches)} inner batches for {steps} steps")
        phi = {n: p.detach().clone().requires_grad_() for n, p in self.model.named_parameters()}
        optimizer = self._new_inner_optimizer(list(phi.values()))
        for step in range(steps):
            x, y = support_x, support_y
            if batches is not None:
                index = batches[step].to(support_x.device)
                x, y = support_x[index], support_y[index]
            with torch.enable_grad():
                loss = self.loss_fn(self.forward_fn(phi, x), y)
                grads = torch.autograd.grad(loss, list(phi.values()))
            for p, g in zip(phi.values(), grads, strict=True):
                p.grad = g
            optimizer.step()
        return {n: p.detach() for n, p in phi.items()}

    def predict(self, adapted: Params, x: torch.Tensor) -> torch.Tensor:
        """The model's output on ``x`` at parameters ``adapted``."""
        return self.forward_fn(adapted, x)

    def _per_task(self, episode, steps: int | None, want_delta: bool):
        """Per chunk of tasks: (sum of phi - theta, query losses, query scores)."""
        theta = dict(self.model.named_parameters())
        num_tasks = episode.support_x.shape[0]
        # Drawn here, in task order on the calling thread, so that the draws do not depend
        # on how tasks are spread over threads.
        batches = [self.inner_batches(episode.support_x.shape[1], self.inner_steps)
                   if want_delta else None for _ in range(num_tasks)]

        def chunk(tasks: range):
            delta = {n: torch.zeros_like(p) for n, p in theta.items()}
            losses, scores = [], []
            for t in tasks:
                phi = self.adapt(episode.support_x[t], episode.support_y[t], steps, batches[t])
                with torch.no_grad():
                    out = self.predict(phi, episode.query_x[t])
                    losses.append(self.loss_fn(out, episode.query_y[t]))
                    scores.append(task_score(out, episode.query_y[t]))
                    if want_delta:
                        for n in delta:
                            delta[n] += phi[n] - theta[n]
            return delta, losses, scores

        return self.runner.map_task_chunks(chunk, num_tasks)

    def meta_loss(self, episode) -> tuple[torch.Tensor, float]:
        """Mean query loss after adaptation, whose backward gives ``theta - mean_t phi_t``.

        Returns ``(loss, score)``; the score is the mean query accuracy (MSE for regression)
        after adaptation.
        """
        num_tasks = check_episode(episode)
        results = self._per_task(episode, None, want_delta=True)
        names = [n for n, _ in self.model.named_parameters()]
        delta = {n: sum(r[0][n] for r in results) / num_tasks for n in names}
        losses = [x for r in results for x in r[1]]
        scores = [x for r in results for x in r[2]]
        value = torch.stack(losses).mean()
        # d(loss)/d(theta) := theta - mean phi = -mean delta, so SGD(lr=eps) is Reptile's step:
        # the value of the query loss plus a term that is zero in value and whose gradient is
        # exactly -delta.
        params = dict(self.model.named_parameters())
        pull = sum((params[n] * -delta[n]).sum() for n in names)
        loss = value + (pull - pull.detach())
        return loss, float(torch.stack(scores).mean())

    def task_scores(self, episode, steps: int | None = None) -> torch.Tensor:
        """Per-task query score ``[T]`` after ``steps`` inner steps (default: k)."""
        check_episode(episode)
        results = self._per_task(episode, steps, want_delta=False)
        return torch.stack([x for r in results for x in r[2]]).float().cpu()
