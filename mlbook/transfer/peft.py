"""Parameter-efficient fine-tuning: LoRA (Hu et al. 2022) and BitFit (Ben Zaken et al. 2022).

Both keep the pretrained weights frozen and train a tiny fraction of parameters, so one
pretrained network can serve many tasks with a small file per task.

- **LoRA** adds to a frozen linear map ``W`` (an ``nn.Linear`` or a 1x1 ``nn.Conv2d``, the
  pointwise convolutions that hold most of a mobile CNN's weights) a trainable low-rank update:
  ``W x + (alpha / r) B A x`` with ``A`` of shape ``[r, in]`` and ``B`` of shape ``[out, r]``.
  ``B`` starts at zero, so at initialisation the adapted network computes exactly what the
  pretrained one does. :func:`add_lora` wraps every matching layer of a model in :class:`LoRA`.
- **BitFit** trains only the bias terms (:func:`bitfit`); in a network with BatchNorm and
  bias-free convolutions those are the BatchNorm shifts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn


def _is_pointwise(layer: nn.Module) -> bool:
    return (isinstance(layer, nn.Conv2d) and layer.kernel_size == (1, 1) and layer.groups == 1
            and layer.padding in ((0, 0), "valid") and layer.dilation == (1, 1))


class LoRA(nn.Module):
    """A frozen linear layer plus a trainable rank-``r`` update ``(alpha / r) B A``.

    Parameters
    ----------
    base
        ``nn.Linear`` or a 1x1 ``nn.Conv2d`` (no groups, no padding), frozen here.
    rank
        ``r``, the rank of the update (``r (in + out)`` trainable parameters).
    alpha
        Scale numerator: the update is multiplied by ``alpha / rank``, so changing the rank
        does not change the size of the initial updates (Hu et al. 2022).
    """

    def __init__(self, base: nn.Module, rank: int = 4, alpha: float = 4.0) -> None:
        super().__init__()
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank must be a positive int, got {rank!r}")
        if isinstance(base, nn.Linear):
            n_in, n_out = base.in_features, base.out_features
            self.down: nn.Module = nn.Linear(n_in, rank, bias=False)
            self.up: nn.Module = nn.Linear(rank, n_out, bias=False)
        elif _is_pointwise(base):
            n_in, n_out = base.in_channels, base.out_channels
            # The down projection takes the base layer's stride, so the shapes match.
            self.down = nn.Conv2d(n_in, rank, 1, stride=base.stride, bias=False)
            self.up = nn.Conv2d(rank, n_out, 1, bias=False)
        else:
            raise TypeError(f"LoRA wraps nn.Linear or a 1x1 nn.Conv2d without groups or "
                            f"padding, got {base!r}")
        if rank > min(n_in, n_out):
            raise ValueError(f"rank {rank} exceeds min(in, out) = {min(n_in, n_out)}: the "
                             "update would not be low-rank")
        self.base = base.requires_grad_(False)
        self.rank, self.alpha = rank, float(alpha)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))  # as nn.Linear initialises
        nn.init.zeros_(self.up.weight)  # B = 0: the update starts at exactly zero

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def delta_weight(self) -> torch.Tensor:
        """The update ``(alpha / r) B A`` as a matrix ``[out, in]``."""
        a = self.down.weight.flatten(1)  # [r, in]
        b = self.up.weight.flatten(1)  # [out, r]
        return self.scaling * b @ a

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scaling * self.up(self.down(x))

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha}"


def add_lora(model: nn.Module, rank: int = 4, alpha: float = 4.0,
             include: Callable[[str, nn.Module], bool] | None = None) -> list[str]:
    """Wrap every ``nn.Linear`` and 1x1 ``nn.Conv2d`` of ``model`` in :class:`LoRA`, in place.

    Everything else in ``model`` is frozen: afterwards only the LoRA matrices train. Unfreeze
    a new head yourself (``head.requires_grad_(True)``) after calling this.

    Parameters
    ----------
    include
        ``include(name, layer)`` decides which of the eligible layers to wrap (default all).

    Returns
    -------
    list of str
        Qualified names of the wrapped layers.

    Raises
    ------
    ValueError
        If no layer was wrapped (nothing would train).
    """
    model.requires_grad_(False)
    targets = [(name, m) for name, m in model.named_modules()
               if (isinstance(m, nn.Linear) or _is_pointwise(m))
               and (include is None or include(name, m))]
    # skip layers inside an existing LoRA (its own down/up projections)
    lora_names = [n for n, m in model.named_modules() if isinstance(m, LoRA)]
    targets = [(n, m) for n, m in targets
               if not any(n == ln or n.startswith(ln + ".") for ln in lora_names)]
    if not targets:
        raise ValueError("add_lora found no nn.Linear or 1x1 nn.Conv2d to wrap (check include=)")
    for name, layer in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, LoRA(layer, rank=rank, alpha=alpha))
    return [name for name, _ in targets]


def bitfit(model: nn.Module, also: Sequence[str] = ()) -> list[str]:
    """Freeze every parameter except the biases (and the modules named in ``also``), in place.

    A bias is a parameter whose own name is ``bias``: of linear and convolution layers, and
    the shift ``beta`` of normalisation layers.

    Parameters
    ----------
    also
        Qualified module names that stay fully trainable, e.g. a new head ``["head"]``.

    Returns
    -------
    list of str
        Names of the parameters left trainable.

    Raises
    ------
    ValueError
        If a name in ``also`` is not a module of ``model``, or nothing is left to train.
    """
    modules = dict(model.named_modules())
    missing = [n for n in also if n not in modules]
    if missing:
        raise ValueError(f"no module named {missing} in the model; modules include "
                         f"{[n for n in modules if n][:8]}")
    trainable = []
    for name, p in model.named_parameters():
        keep = name.rpartition(".")[2] == "bias" or any(
            name.startswith(prefix + ".") for prefix in also)
        p.requires_grad_(keep)
        if keep:
            trainable.append(name)
    if not trainable:
        raise ValueError("the model has no bias parameters and nothing in also=: BitFit "
                         "would train nothing")
    return trainable


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) scalar parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
