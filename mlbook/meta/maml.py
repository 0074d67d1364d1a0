"""MAML (Finn, Abbeel & Levine 2017) as a pure function of the parameters, and its family.

For a task with support set ``S`` and query set ``Q``, MAML adapts the shared initialisation
``theta`` by a few gradient steps on the support loss,

    phi_0 = theta,    phi_{j+1} = phi_j - alpha * grad L_S(phi_j),

and trains ``theta`` so that the *adapted* parameters do well on the query set: the meta-loss
is ``mean over tasks of L_Q(phi_steps(theta))`` and its gradient flows through the inner
steps (second order: Hessian-vector products of ``L_S``). The family, all options of
:class:`MAML`:

* **First-order MAML** (``first_order=True``): treat ``grad L_S`` as a constant, so the
  meta-gradient is the query gradient at ``phi``. Cheaper, usually almost as good.
* **Meta-SGD** (Li et al. 2017, ``learn_inner_lr=True``): ``alpha`` becomes one learnable
  tensor per parameter (same shape, elementwise), trained with ``theta``.
* **ANIL** (Raghu et al. 2020, ``adapt="head"``): only the final linear layer adapts in the
  inner loop; the body is shared as is (but still meta-trained through the head's steps).

Everything is written with :func:`torch.autograd.grad` on a parameter dict and a functional
forward ``f(params, x)`` (:mod:`mlbook.meta.functional`). Two ways to compute the same
meta-gradient:

* the **plain path** (``fast=False``): one graph over all tasks, ``loss.backward()`` at the
  end; easiest to read, it is the reference the tests compare against;
* the **fast path** (default): each task's meta-gradient is computed as soon as its query
  loss is known (so only one task's graph is alive per thread), tasks are split over Python
  threads with one intra-op thread each, and :class:`~mlbook.meta._tasks.AttachGradients`
  hands the summed gradients to ``loss.backward()``. Tests check it equals the plain path to
  1e-10 in float64.

Batch norm uses the statistics of the batch it sees, in the inner and the outer loop (Finn
et al.); build the model with ``track_running_stats=False`` (e.g. ``Conv4(...,
track_running_stats=False)``). We deliberately loop over tasks rather than ``torch.func.vmap``
over them: with native batch norm the second-order gradient under ``vmap`` is silently off
by about 2% (torch 2.14/2.15), and on a CPU it is slower too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

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

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
InnerLR = float | Mapping[str, torch.Tensor]


def _check_steps(steps: object, name: str = "steps") -> int:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(
            f"{name} must be an int >= 1 (number of inner gradient steps), got {steps!r}"
        )
    return steps


def _check_lr(inner_lr: object) -> None:
    if isinstance(inner_lr, Mapping):
        return
    if not isinstance(inner_lr, (int, float)) or isinstance(inner_lr, bool) or not inner_lr > 0:
        raise ValueError(
            "inner_lr must be a positive number or a dict of per-parameter tensors, "
            f"got {inner_lr!r}"
        )


def inner_update(
    fmodel: Callable[[Params, torch.Tensor], torch.Tensor],
    params: Params,
    support_x: torch.Tensor,
    support_y: torch.Tensor,
    loss_fn: LossFn,
    inner_lr: InnerLR,
    steps: int = 1,
    first_order: bool = False,
    adapt_names: Iterable[str] | None = None,
) -> Params:
    """Adapt ``params`` to one task by ``steps`` steps of gradient descent on its support set.

    Parameters
    ----------
    fmodel
        Functional forward ``fmodel(params, x) -> predictions``, e.g.
        :func:`mlbook.meta.functional_forward` ``(model)``.
    params
        ``name -> tensor``; the tensors ``theta`` (requiring grad when a meta-gradient is
        wanted).
    support_x, support_y
        One task's support inputs ``[S, *sample]`` and targets ``[S]`` (class ids) or
        ``[S, *target]`` (regression).
    loss_fn
        ``loss_fn(predictions, targets) -> scalar``, e.g. ``F.cross_entropy``, ``F.mse_loss``.
    inner_lr
        Step size ``alpha``: a positive float, or a dict ``name -> tensor`` broadcastable to
        each adapted parameter (Meta-SGD's learnable per-parameter rates).
    steps
        Number of inner gradient steps (>= 1).
    first_order
        If ``True``, the inner gradients are treated as constants (detached): the
        first-order approximation. If ``False`` the graph of the inner gradients is kept
        (``create_graph=True``) so the meta-gradient includes the second-order terms.
    adapt_names
        Names of the parameters that adapt (default: all). The others are returned as is:
        ANIL adapts only the head.

    Returns
    -------
    dict
        The adapted parameters ``phi`` (same names as ``params``). They are functions of
        ``params`` (and of ``inner_lr``) in the autograd graph when grad mode is on.

    Raises
    ------
    ValueError
        On ``steps < 1``, a non-positive ``inner_lr``, or names missing from ``params``.
    """
    _check_steps(steps)
    _check_lr(inner_lr)
    names = list(params) if adapt_names is None else list(adapt_names)
    missing = [n for n in names if n not in params]
    if missing or not names:
        raise ValueError(
            f"adapt_names must be a non-empty subset of the parameter names; unknown: {missing}, "
            f"known: {list(params)}"
        )
    if isinstance(inner_lr, Mapping):
        absent = [n for n in names if n not in inner_lr]
        if absent:
            raise ValueError(f"inner_lr dict has no learning rate for {absent}")
    grad_mode = torch.is_grad_enabled()
    # Second order needs the graph of the inner gradient, but only if anyone will
    # differentiate the result (not during evaluation under torch.no_grad()).
    create_graph = not first_order and grad_mode
    phi = dict(params)
    if not grad_mode:
        # Evaluation: no meta-gradient is wanted, so each step's weights are fresh leaves.
        phi.update({n: phi[n].detach().requires_grad_() for n in names})
    for _ in range(steps):
        with torch.enable_grad():  # the inner loop needs gradients even at test time
            loss = loss_fn(fmodel(phi, support_x), support_y)
            grads = torch.autograd.grad(loss, [phi[n] for n in names], create_graph=create_graph)
        for name, grad in zip(names, grads, strict=True):
            lr = inner_lr[name] if isinstance(inner_lr, Mapping) else inner_lr
            phi[name] = phi[name] - lr * (grad.detach() if first_order else grad)
            if not grad_mode:
                phi[name].requires_grad_()
    if not grad_mode:
        phi = {n: p.detach() for n, p in phi.items()}
    return phi


class MAML(nn.Module):
    """MAML, first-order MAML, Meta-SGD and ANIL around any model.

    Parameters
    ----------
    model
        The network whose initialisation is meta-learned, e.g.
        ``Conv4(num_classes=5, track_running_stats=False)`` or an MLP for regression.
    inner_lr
        Inner step size ``alpha`` (0.4 for Omniglot in Finn et al.; 0.01 for sinusoids).
        With ``learn_inner_lr`` the initial value of every learnable rate.
    inner_steps
        Inner gradient steps during meta-training (>= 1). Test time may use more, see
        :meth:`adapt` and :meth:`evaluate_episode`.
    first_order
        First-order MAML (no second derivatives).
    learn_inner_lr
        Meta-SGD: one learnable step-size tensor per adapted parameter, in
        :attr:`inner_lrs` (trained by the outer optimizer with the model).
    adapt
        ``"all"`` (MAML) or ``"head"`` (ANIL: only parameters under ``head_name`` adapt).
    loss_fn
        ``F.cross_entropy`` (classification; accuracy is reported) or e.g. ``F.mse_loss``
        (regression; the reported "accuracy" is ``nan``).
    head_name
        Name of the submodule that is the head for ``adapt="head"`` (``Conv4.head``).
    fast
        Use the fast path (per-task gradients, task threads); ``False`` builds one graph
        over all tasks. Both give the same meta-gradient.
    threads
        Task threads for the fast path; ``None``: ``torch.get_num_threads()`` on a CPU
        (1 on a GPU). Threads need the model to have a thread-safe functional forward
        (:class:`~mlbook.meta.functional.FunctionalModel`); otherwise one thread is used.
    vectorize
        Compute all tasks at once with ``torch.func.vmap`` over ``torch.func.grad``
        (overrides ``fast``). Fast for small nets without batch norm, e.g. the sinusoid MLP;
        refused for nets with batch norm, whose second-order gradient under ``vmap`` is
        silently wrong in torch 2.14/2.15.

    Examples
    --------
    >>> learner = MAML(Conv4(num_classes=5, track_running_stats=False), inner_lr=0.4)
    >>> loss, acc = learner.meta_loss(episode)      # episode from mlbook.data
    >>> optimizer.zero_grad(); loss.backward(); optimizer.step()
    """

    def __init__(
        self,
        model: nn.Module,
        inner_lr: float = 0.4,
        inner_steps: int = 1,
        first_order: bool = False,
        learn_inner_lr: bool = False,
        adapt: str = "all",
        loss_fn: LossFn = F.cross_entropy,
        head_name: str = "head",
        fast: bool = True,
        threads: int | None = None,
        vectorize: bool = False,
    ) -> None:
        super().__init__()
        _check_lr(inner_lr)
        if isinstance(inner_lr, Mapping):
            raise ValueError(
                "MAML takes a float inner_lr; use learn_inner_lr=True for per-parameter rates"
            )
        self.inner_steps = _check_steps(inner_steps, "inner_steps")
        if adapt not in ("all", "head"):
            raise ValueError(f"adapt must be 'all' (MAML) or 'head' (ANIL), got {adapt!r}")
        for name, module in model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
                raise ValueError(
                    f"batch norm {name!r} tracks running statistics; MAML normalises with the "
                    "statistics of each batch (Finn et al. 2017). Build the model with "
                    "track_running_stats=False, e.g. Conv4(..., track_running_stats=False)"
                )
        if threads is not None:
            resolve_threads(threads, 1, torch.device("cpu"))  # validates the value
        self.model = model
        self.inner_lr = float(inner_lr)
        self.first_order = bool(first_order)
        self.adapt_mode = adapt
        self.loss_fn = loss_fn
        self.fast = bool(fast)
        self.threads = threads
        has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        if vectorize and has_bn:
            raise ValueError(
                "vectorize=True is refused for models with batch norm: the double backward of "
                "batch norm under torch.func.vmap gives a wrong second-order meta-gradient "
                "(about 2% off, torch 2.14/2.15). Use the default task loop (vectorize=False)"
            )
        self.vectorize = bool(vectorize)
        self.fmodel = FunctionalModel(model)

        names = [n for n, _ in model.named_parameters()]
        if adapt == "head":
            prefix = head_name + "."
            self.adapt_names = [n for n in names if n.startswith(prefix)]
            if not self.adapt_names:
                raise ValueError(
                    f"adapt='head' but the model has no parameters under {head_name!r}; "
                    f"pass head_name= (parameters: {names})"
                )
        else:
            self.adapt_names = names

        self.learn_inner_lr = bool(learn_inner_lr)
        self.inner_lrs = nn.ParameterDict()
        if learn_inner_lr:
            params = dict(model.named_parameters())
            for name in self.adapt_names:
                self.inner_lrs[self._lr_key(name)] = nn.Parameter(
                    torch.full_like(params[name].detach(), float(inner_lr))
                )

    # ----------------------------------------------------------------- helpers
    @staticmethod
    def _lr_key(name: str) -> str:
        return name.replace(".", "__")  # ParameterDict keys may not contain dots

    def params(self) -> Params:
        """``theta``: the model's parameters as a dict ``name -> tensor`` (live, not copies)."""
        return dict(self.model.named_parameters())

    def step_sizes(self) -> InnerLR:
        """The inner step size: a float, or with Meta-SGD the dict ``name -> rate tensor``."""
        if not self.learn_inner_lr:
            return self.inner_lr
        return {n: self.inner_lrs[self._lr_key(n)] for n in self.adapt_names}

    def _is_classification(self, targets: torch.Tensor) -> bool:
        return not targets.is_floating_point()

    # -------------------------------------------------------------- one task
    def adapt(
        self,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        steps: int | None = None,
        params: Params | None = None,
        first_order: bool | None = None,
    ) -> Params:
        """Adapted parameters ``phi`` for one task (``support_x [S, ...]``, ``support_y [S]``).

        ``steps`` defaults to :attr:`inner_steps`; ``params`` to :meth:`params`;
        ``first_order`` to the learner's setting. Differentiable w.r.t. ``theta`` when
        grad mode is on.
        """
        return inner_update(
            self.fmodel,
            self.params() if params is None else params,
            support_x,
            support_y,
            self.loss_fn,
            self.step_sizes(),
            self.inner_steps if steps is None else steps,
            self.first_order if first_order is None else first_order,
            self.adapt_names,
        )

    def predict(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """The model's output ``[B, ...]`` on ``x [B, ...]`` at parameters ``params``."""
        return self.fmodel(params, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model at ``theta`` (no adaptation)."""
        return self.fmodel(self.params(), x)

    # ------------------------------------------------------------- meta-loss
    def meta_loss(self, episode) -> tuple[torch.Tensor, float]:
        """Mean query loss over the ``T`` tasks after adaptation, and mean query accuracy.

        Parameters
        ----------
        episode
            :class:`mlbook.data.Episode` (or anything with ``support_x [T, S, ...]``,
            ``support_y [T, S]``, ``query_x [T, Q, ...]``, ``query_y [T, Q]``).

        Returns
        -------
        (loss, accuracy)
            ``loss`` a scalar tensor: ``loss.backward()`` gives the meta-gradient of the
            model parameters (and of :attr:`inner_lrs` for Meta-SGD). ``accuracy`` a float
            in [0, 1] (``nan`` for regression).
        """
        num_tasks = check_episode(episode)
        if self.vectorize:
            return self._meta_loss_vmap(episode)
        if self.fast and torch.is_grad_enabled():
            return self._meta_loss_fast(episode, num_tasks)
        return self._meta_loss_plain(episode, num_tasks)

    def _task_loss(self, episode, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        phi = self.adapt(episode.support_x[t], episode.support_y[t])
        out = self.fmodel(phi, episode.query_x[t])
        loss = self.loss_fn(out, episode.query_y[t])
        if self._is_classification(episode.query_y):
            acc = accuracy(out.detach(), episode.query_y[t])
        else:
            acc = torch.tensor(float("nan"))
        return loss, acc

    def _meta_loss_plain(self, episode, num_tasks: int) -> tuple[torch.Tensor, float]:
        """Reference path: one graph over all tasks."""
        losses, accs = zip(*(self._task_loss(episode, t) for t in range(num_tasks)), strict=True)
        return torch.stack(losses).mean(), float(torch.stack(accs).mean())

    def meta_parameters(self) -> list[torch.Tensor]:
        """What the outer optimizer trains: model parameters (+ Meta-SGD rates)."""
        return [p for p in self.parameters() if p.requires_grad]

    def _meta_loss_fast(self, episode, num_tasks: int) -> tuple[torch.Tensor, float]:
        """Per-task meta-gradients in task threads, attached to the summed loss value."""
        inputs = self.meta_parameters()
        device = inputs[0].device if inputs else torch.device("cpu")
        threads = resolve_threads(self.threads, num_tasks, device, self.fmodel.thread_safe)

        def chunk(tasks: range):
            grads = [torch.zeros_like(p) for p in inputs]
            loss_sum = torch.zeros((), dtype=inputs[0].dtype, device=device)
            acc_sum = 0.0
            for t in tasks:
                loss, acc = self._task_loss(episode, t)
                task_grads = torch.autograd.grad(loss / num_tasks, inputs, allow_unused=True)
                for g, tg in zip(grads, task_grads, strict=True):
                    if tg is not None:
                        g += tg
                loss_sum += loss.detach()
                acc_sum += float(acc)
            return grads, loss_sum, acc_sum

        results = map_task_chunks(chunk, num_tasks, threads)
        grads, loss_sum, acc_sum = results[0]
        for other_grads, other_loss, other_acc in results[1:]:
            for g, og in zip(grads, other_grads, strict=True):
                g += og
            loss_sum = loss_sum + other_loss
            acc_sum += other_acc
        loss = AttachGradients.apply(loss_sum / num_tasks, grads, *inputs)
        return loss, acc_sum / num_tasks

    def _meta_loss_vmap(self, episode) -> tuple[torch.Tensor, float]:
        """All tasks at once: ``vmap`` over tasks of ``torch.func.grad`` inner steps."""
        theta, lrs = self.params(), self.step_sizes()
        names, first_order, steps = self.adapt_names, self.first_order, self.inner_steps
        classify = self._is_classification(episode.query_y)

        def one_task(sx, sy, qx, qy):
            phi = dict(theta)
            for _ in range(steps):
                def support_loss(adapted, phi=phi):
                    return self.loss_fn(self.fmodel({**phi, **adapted}, sx), sy)

                grads = torch.func.grad(support_loss)({n: phi[n] for n in names})
                for n in names:
                    g = grads[n].detach() if first_order else grads[n]
                    phi[n] = phi[n] - (lrs[n] if isinstance(lrs, Mapping) else lrs) * g
            out = self.fmodel(phi, qx)
            acc = accuracy(out, qy) if classify else out.new_tensor(0.0)
            return self.loss_fn(out, qy), acc

        losses, accs = torch.func.vmap(one_task)(
            episode.support_x, episode.support_y, episode.query_x, episode.query_y)
        return losses.mean(), float(accs.mean()) if classify else float("nan")

    # ------------------------------------------------------------ evaluation
    def evaluate_episode(self, episode, inner_steps: int | None = None) -> torch.Tensor:
        """Per-task query score after adapting with ``inner_steps`` (default: training's).

        Returns
        -------
        Tensor ``[T]``
            Query accuracy in [0, 1] per task for classification, query loss per task for
            regression. No meta-gradient is built (first-order adaptation, no outer graph).
        """
        num_tasks = check_episode(episode)
        steps = self.inner_steps if inner_steps is None else inner_steps
        _check_steps(steps, "inner_steps")
        theta = {n: p.detach() for n, p in self.model.named_parameters()}
        device = next(iter(theta.values())).device
        threads = resolve_threads(self.threads, num_tasks, device, self.fmodel.thread_safe)
        classify = self._is_classification(episode.query_y)

        def chunk(tasks: range) -> list[torch.Tensor]:
            scores = []
            for t in tasks:
                with torch.no_grad():
                    phi = self.adapt(episode.support_x[t], episode.support_y[t], steps,
                                     params=theta, first_order=True)
                    out = self.fmodel(phi, episode.query_x[t])
                    y = episode.query_y[t]
                    scores.append(accuracy(out, y) if classify else self.loss_fn(out, y))
            return scores

        chunks = map_task_chunks(chunk, num_tasks, threads)
        return torch.stack([s for c in chunks for s in c]).float().cpu()

    def extra_repr(self) -> str:
        return (f"inner_lr={self.inner_lr}, inner_steps={self.inner_steps}, "
                f"first_order={self.first_order}, learn_inner_lr={self.learn_inner_lr}, "
                f"adapt={self.adapt_mode!r}, fast={self.fast}")
