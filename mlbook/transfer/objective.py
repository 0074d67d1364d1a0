r"""The regularised fine-tuning objective :math:`\lambda L_{source} + (1 - \lambda) L_{target}`.

Fine-tuning on a small target set can forget what the source task taught. Plain
fine-tuning minimises :math:`L_{target}` alone, starting from the pretrained weights
(``lam = 0`` below); the formula here is a family of *regularisers* added to it, not the
definition of fine-tuning. Three standard ways to keep the network close to its source
solution fit it

.. math::

    L(w) = \lambda \, L_{source}(w) + (1 - \lambda) \, L_{target}(w), \qquad 0 \le \lambda \le 1,

where :math:`L_{target}` is the cross-entropy on target batches and :math:`L_{source}` is
one of

``"l2sp"`` (:class:`L2SP`, Li et al. 2018)
    :math:`\frac{\alpha}{2}\lVert w_S - w_S^0\rVert^2 + \frac{\beta}{2}\lVert w_{new}\rVert^2`:
    the squared distance of the shared (pretrained) weights :math:`w_S` to their pretrained
    values :math:`w_S^0`, plus optional plain weight decay on the new head's weights. It
    needs no source data at fine-tuning time, only a copy of the pretrained weights.
``"source_head"`` (a retained source head: joint training or Learning without Forgetting)
    the cross-entropy of the *old* head's logits (``source_logits``) against ``source_y``.
    Two methods fit this term, and they differ in the images and targets they use:

    - *joint training*: the old head on **source** batches, against their true labels
      (int64 class indices). It needs the source data and a second forward pass per step.
    - *Learning without Forgetting* (LwF, Li & Hoiem 2017): the old head on the **target
      (new-task) batch**, against the soft outputs that the original network gave for
      the same target images, recorded once before fine-tuning. This is knowledge
      distillation: with temperature :math:`T` (LwF uses 2), pass
      ``source_logits = old_head_logits / T`` and ``source_y = softmax(recorded_logits / T)``
      (``F.cross_entropy`` accepts class probabilities as targets). LwF needs **no source
      data**, only the target images and the old head.

``lam = 0`` is plain fine-tuning; ``lam = 1`` ignores the target.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

SOURCE_TERMS = ("l2sp", "source_head")


def check_lambda(lam: float) -> float:
    """Return ``lam`` as a float, or raise if it is not in ``[0, 1]``."""
    lam = float(lam)
    if not 0.0 <= lam <= 1.0:
        raise ValueError(
            f"lam (the weight of the source term) must lie in [0, 1], got {lam}; "
            "use 0 for plain fine-tuning"
        )
    return lam


class L2SP(nn.Module):
    r"""The L2-SP penalty (Li et al. 2018).

    .. math::

        \Omega(w) = \frac{\alpha}{2}\lVert w_S - w_S^0\rVert^2
                    + \frac{\beta}{2}\lVert w_{new}\rVert^2

    Parameters
    ----------
    model
        The network right after loading its pretrained weights (and, if it has one, after
        :func:`~mlbook.transfer.replace_head`): the current values of its parameters become
        the reference :math:`w^0`.
    new
        Qualified module names whose parameters are *new* (not pretrained), by default the
        head: they get the plain decay ``beta`` instead of the pull towards :math:`w^0`.
    alpha, beta
        Non-negative weights of the two sums.

    Notes
    -----
    The reference weights are stored as buffers (a detached copy), so they follow
    ``.to(device)`` and are not trained. Calling the module with a model whose parameter
    names differ from the reference raises a ``KeyError``.
    """

    def __init__(
        self,
        model: nn.Module,
        new: Sequence[str] = ("head",),
        alpha: float = 1.0,
        beta: float = 0.0,
    ) -> None:
        super().__init__()
        if alpha < 0 or beta < 0:
            raise ValueError(f"alpha and beta must be >= 0, got alpha={alpha}, beta={beta}")
        self.alpha, self.beta = float(alpha), float(beta)
        self.new = tuple(new)
        known = {n for n, _ in model.named_modules()}
        missing = [n for n in self.new if n not in known]
        if missing:
            raise ValueError(f"new names unknown layers {missing} of {type(model).__name__}")
        self.names: list[str] = []
        for name, p in model.named_parameters():
            if not self._is_new(name):
                self.register_buffer(_buffer_name(name), p.detach().clone())
                self.names.append(name)

    def _is_new(self, name: str) -> bool:
        return any(name.startswith(n + ".") for n in self.new)

    def forward(self, model: nn.Module) -> torch.Tensor:
        """The penalty (a scalar tensor, differentiable with respect to ``model``)."""
        shared = None
        new = None
        for name, p in model.named_parameters():
            if self._is_new(name):
                sq = p.pow(2).sum()
                new = sq if new is None else new + sq
            else:
                sq = (p - getattr(self, _buffer_name(name))).pow(2).sum()
                shared = sq if shared is None else shared + sq
        zero = next(model.parameters()).new_zeros(())
        shared = zero if shared is None else shared
        new = zero if new is None else new
        return 0.5 * self.alpha * shared + 0.5 * self.beta * new


def _buffer_name(param_name: str) -> str:
    return "ref__" + param_name.replace(".", "__")


class RegularisedObjective:
    r"""``lam * L_source + (1 - lam) * L_target`` for fine-tuning (see the module docstring).

    Parameters
    ----------
    lam
        Weight of the source term, in ``[0, 1]``.
    source
        ``"l2sp"`` (pass ``model=`` when calling) or ``"source_head"`` (pass
        ``source_logits=`` and ``source_y=``: the retained head's logits and their targets,
        source labels for joint training or recorded soft outputs on the target batch for
        LwF, see the module docstring).
    l2sp
        The :class:`L2SP` penalty, required for ``source="l2sp"``.

    Examples
    --------
    >>> penalty = L2SP(model, new=["head"], alpha=0.01)       # right after replace_head
    >>> objective = RegularisedObjective(0.5, "l2sp", l2sp=penalty)
    >>> loss = objective(model(x), y, model=model)
    """

    def __init__(self, lam: float, source: str = "l2sp", l2sp: L2SP | None = None) -> None:
        self.lam = check_lambda(lam)
        if source not in SOURCE_TERMS:
            raise ValueError(f"source must be one of {SOURCE_TERMS}, got {source!r}")
        if source == "l2sp" and l2sp is None:
            raise ValueError(
                "source='l2sp' needs the penalty: "
                "RegularisedObjective(lam, 'l2sp', l2sp=L2SP(model))"
            )
        self.source = source
        self.l2sp = l2sp

    def terms(
        self,
        target_logits: torch.Tensor,
        target_y: torch.Tensor,
        *,
        model: nn.Module | None = None,
        source_logits: torch.Tensor | None = None,
        source_y: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``{"total", "source", "target"}``: the objective and its two unweighted terms.

        Shapes: ``target_logits [B, N]``, ``target_y [B]``; ``source_logits [B', M]`` and
        ``source_y`` either ``[B']`` int64 class indices (joint training on source batches)
        or ``[B', M]`` class probabilities (LwF: the original network's softened outputs on
        the same target batch, so ``B' = B``).
        """
        target = F.cross_entropy(target_logits, target_y)
        if self.source == "l2sp":
            if model is None:
                raise ValueError("the L2-SP objective needs model= to measure the distance to w0")
            source = self.l2sp(model)
        else:
            if source_logits is None or source_y is None:
                raise ValueError(
                    "the retained-source-head objective needs source_logits= and source_y= "
                    "(the old head's logits on a source batch and its labels)"
                )
            source = F.cross_entropy(source_logits, source_y)
        total = self.lam * source + (1.0 - self.lam) * target
        return {"total": total, "source": source, "target": target}

    def __call__(
        self, target_logits: torch.Tensor, target_y: torch.Tensor, **kwargs
    ) -> torch.Tensor:
        """The scalar objective; keyword arguments as in :meth:`terms`."""
        return self.terms(target_logits, target_y, **kwargs)["total"]
