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
* **ProtoMAML** (Triantafillou et al. 2020, ``head_init="prototypes"``): each task's linear
  head starts from its class prototypes, ``w_c = 2 p_c``, ``b_c = -||p_c||^2`` (so before any
  step it classifies like Prototypical Networks), then adapts as in MAML; the meta-gradient
  flows through the prototypes into the body.

Read :func:`~mlbook.meta.inner_loop.inner_update`, :meth:`MAML.task_loss` and
:meth:`MAML.meta_loss`: that is the whole algorithm, written with
:func:`torch.autograd.grad` on a parameter dict. How the tasks of an episode are run is
decided once, when the learner is built, by :func:`mlbook.meta._fast.runner.make_runner`:
``fast=False`` gives the plain loop over tasks with the module's own forward
(``torch.func.functional_call``; ``PlainRunner.mean_over_tasks`` in that module is the loop
that runs); ``fast=True`` (the default) computes the same meta-gradient faster on a CPU (task
threads, an interpreted forward in a CPU-friendly layout). Tests check the two agree to 1e-10
in float64.

Batch norm normalises with the statistics of the batch it sees, in the inner and outer loop
and at test time (the rule of :mod:`mlbook.meta.learner`). We loop over tasks rather than
``torch.func.vmap`` over them: with native batch norm the second-order gradient under
``vmap`` is silently off by about 2% (torch 2.14/2.15); ``vectorize=True`` is offered for
small nets without batch norm (the sinusoid MLP), where it is much faster.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from mlbook.meta._fast.runner import make_runner
from mlbook.meta._fast.tasks import resolve_threads
from mlbook.meta._tasks import check_episode, task_score
from mlbook.meta.functional import Params
from mlbook.meta.inner_loop import InnerLR, LossFn, check_lr, check_steps, inner_update
from mlbook.meta.learner import check_batch_norm
from mlbook.meta.protonets import prototypes


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
        Inner gradient steps during meta-training (>= 1). Test time may use more
        (``steps`` of :meth:`adapt` and :meth:`task_scores`).
    first_order
        First-order MAML (no second derivatives).
    learn_inner_lr
        Meta-SGD: one learnable step-size tensor per adapted parameter, in
        :attr:`inner_lrs` (trained by the outer optimizer with the model).
    adapt
        ``"all"`` (MAML) or ``"head"`` (ANIL: only parameters under ``head_name`` adapt).
    loss_fn
        ``F.cross_entropy`` (classification; scores are accuracies) or e.g. ``F.mse_loss``
        (regression; scores are mean squared errors).
    head_name
        Name of the submodule that is the head for ``adapt="head"`` and ``head_init``
        (``Conv4.head``).
    head_init
        ``None`` (MAML: the head is meta-learned like the rest) or ``"prototypes"``
        (ProtoMAML: each task's head starts from its class prototypes; the head must be an
        ``nn.Linear`` with a bias, as wide as the tasks have classes).
    fast
        ``True``: the same meta-gradient, faster (tasks over threads, an interpreted forward
        in a CPU layout; :mod:`mlbook.meta._fast`); ``"threads"``: task threads with the
        module's ops in NCHW (a yardstick); ``False``: the readable code only, with the
        module's own forward. The fast forward knows ``nn.Sequential`` stacks of common layers
        and ``Conv4``; for other models pass ``fast=False``.
    threads
        Task threads for the fast path; ``None``: ``torch.get_num_threads()`` on a CPU
        (1 on a GPU).
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
        head_init: str | None = None,
        fast: bool | str = True,
        threads: int | None = None,
        vectorize: bool = False,
    ) -> None:
        super().__init__()
        check_lr(inner_lr)
        if isinstance(inner_lr, Mapping):
            raise ValueError(
                "MAML takes a float inner_lr; use learn_inner_lr=True for per-parameter rates"
            )
        self.inner_steps = check_steps(inner_steps, "inner_steps")
        if adapt not in ("all", "head"):
            raise ValueError(f"adapt must be 'all' (MAML) or 'head' (ANIL), got {adapt!r}")
        if not any(fast is choice for choice in (True, False)) and fast != "threads":
            raise ValueError(f"fast must be True, False or 'threads', got {fast!r}")
        check_batch_norm(model, "MAML")
        if head_init not in (None, "prototypes"):
            raise ValueError(f"head_init must be None or 'prototypes', got {head_init!r}")
        head = dict(model.named_modules()).get(head_name)
        if head_init and not (isinstance(head, nn.Linear) and head.bias is not None):
            raise ValueError(f"head_init='prototypes' needs model.{head_name} to be an nn.Linear "
                             f"with a bias, got {type(head).__name__}; pass head_name=")
        if threads is not None:
            resolve_threads(threads, 1, torch.device("cpu"))  # validates the value
        has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        if vectorize and has_bn:
            raise ValueError(
                "vectorize=True is refused for models with batch norm: the double backward of "
                "batch norm under torch.func.vmap gives a wrong second-order meta-gradient "
                "(about 2% off, torch 2.14/2.15). Use the default task loop (vectorize=False)"
            )
        if vectorize and head_init:
            raise ValueError("vectorize=True does not support head_init='prototypes'; use the "
                             "task loop (vectorize=False)")
        self.model = model
        self.inner_lr = float(inner_lr)
        self.first_order = bool(first_order)
        self.adapt_mode = adapt
        self.head_name, self.head_init = head_name, head_init
        self.loss_fn = loss_fn
        self.fast = fast
        self.threads = threads
        self.vectorize = bool(vectorize)
        # How the tasks are run is decided here, once (mlbook.meta._fast.runner).
        self.runner = make_runner(model, fast, threads, self.vectorize)
        self.forward_fn: Callable = self.runner.forward_fn

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

    @staticmethod
    def _lr_key(name: str) -> str:
        return name.replace(".", "__")  # ParameterDict keys may not contain dots

    def params(self) -> Params:
        """``theta``: the model's parameters as a dict ``name -> tensor`` (live, not copies)."""
        return dict(self.model.named_parameters())

    def meta_parameters(self) -> list[torch.Tensor]:
        """What the outer optimizer trains: model parameters (+ Meta-SGD rates)."""
        return [p for p in self.parameters() if p.requires_grad]

    def step_sizes(self) -> InnerLR:
        """The inner step size: a float, or with Meta-SGD the dict ``name -> rate tensor``."""
        if not self.learn_inner_lr:
            return self.inner_lr
        return {n: self.inner_lrs[self._lr_key(n)] for n in self.adapt_names}

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
        params = self.params() if params is None else params
        if self.head_init == "prototypes":
            params = self.prototype_head(params, support_x, support_y)
        return inner_update(
            self.forward_fn,
            params,
            support_x,
            support_y,
            self.loss_fn,
            self.step_sizes(),
            self.inner_steps if steps is None else steps,
            self.first_order if first_order is None else first_order,
            self.adapt_names,
        )

    def prototype_head(self, params: Params, support_x: torch.Tensor,
                       support_y: torch.Tensor) -> Params:
        """``params`` with the head set from the support set's class prototypes (ProtoMAML).

        The body's features ``z`` are the network's output with the head replaced by the
        identity map; with prototypes ``p_c``, ``w_c = 2 p_c`` and ``b_c = -||p_c||^2`` give
        logits ``2 p_c.z - ||p_c||^2 = ||z||^2 - ||z - p_c||^2``: Prototypical Networks'
        logits up to a per-input constant, so the same softmax.
        """
        weight, bias = f"{self.head_name}.weight", f"{self.head_name}.bias"
        n_way, width = params[weight].shape
        identity = {weight: torch.eye(width, dtype=params[weight].dtype,
                                      device=params[weight].device),
                    bias: params[bias].new_zeros(width)}
        features = self.forward_fn({**params, **identity}, support_x)
        protos = prototypes(features, support_y, n_way)
        return {**params, weight: 2 * protos, bias: -(protos**2).sum(1)}

    def predict(self, adapted: Params, x: torch.Tensor) -> torch.Tensor:
        """The model's output ``[B, ...]`` on ``x [B, ...]`` at parameters ``adapted``."""
        return self.forward_fn(adapted, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model at ``theta`` (no adaptation)."""
        return self.forward_fn(self.params(), x)

    def task_loss(self, episode, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Task ``t``: adapt on its support set, then its query loss and score at ``phi``."""
        phi = self.adapt(episode.support_x[t], episode.support_y[t])
        out = self.predict(phi, episode.query_x[t])
        return self.loss_fn(out, episode.query_y[t]), task_score(out, episode.query_y[t])

    # ------------------------------------------------------------- meta-loss
    def meta_loss(self, episode) -> tuple[torch.Tensor, float]:
        """Mean query loss over the ``T`` tasks after adaptation, and the mean query score.

        Parameters
        ----------
        episode
            :class:`mlbook.data.Episode` or :class:`mlbook.data.SinusoidBatch` (anything
            with ``support_x [T, S, ...]``, ``support_y``, ``query_x [T, Q, ...]``,
            ``query_y``).

        Returns
        -------
        (loss, score)
            ``loss`` a scalar tensor: ``loss.backward()`` gives the meta-gradient of the
            meta-parameters. ``score`` the mean query accuracy (or MSE for regression).
        """
        num_tasks = check_episode(episode)
        # The mean over tasks of task_loss (Finn et al.'s Algorithm 1); self.runner only
        # decides how the tasks are mapped: PlainRunner.mean_over_tasks is the plain loop.
        return self.runner.mean_over_tasks(lambda t: self.task_loss(episode, t), num_tasks,
                                           learner=self, episode=episode)

    # ------------------------------------------------------------ evaluation
    def task_scores(self, episode, steps: int | None = None) -> torch.Tensor:
        """Per-task query score ``[T]`` after adapting with ``steps`` (default: training's).

        Accuracy in [0, 1] for classification, mean squared error for regression. No
        meta-gradient is built (first-order adaptation, no outer graph).
        """
        num_tasks = check_episode(episode)
        steps = check_steps(self.inner_steps if steps is None else steps, "steps")
        theta = {n: p.detach() for n, p in self.params().items()}
        scores = torch.empty(num_tasks)

        def chunk(tasks: range) -> None:
            for t in tasks:
                with torch.no_grad():
                    phi = self.adapt(episode.support_x[t], episode.support_y[t], steps,
                                     params=theta, first_order=True)
                    scores[t] = task_score(self.predict(phi, episode.query_x[t]),
                                           episode.query_y[t])

        self.runner.map_task_chunks(chunk, num_tasks)
        return scores

    def extra_repr(self) -> str:
        return (f"inner_lr={self.inner_lr}, inner_steps={self.inner_steps}, "
                f"first_order={self.first_order}, learn_inner_lr={self.learn_inner_lr}, "
                f"adapt={self.adapt_mode!r}, head_init={self.head_init!r}, fast={self.fast}")
