"""Fine-tuning tools: freezing, partial unfreezing and layer-wise learning rates.

Everything here works on *blocks*: the ordered stages of a network from input to output.
:func:`blocks` finds them without help for the networks of this book and for torchvision's:

- a model with an ``nn.Sequential`` called ``features`` (``Conv4``,
  torchvision's VGG/EfficientNet/MobileNet/...) contributes one block per child of
  ``features`` that has parameters (``"features.0"``, ``"features.1"``, ...), followed by
  its other top-level children with parameters (``"head"``, ``"classifier"``);
- any other model contributes its top-level children with parameters, in the order they
  were registered (torchvision's ResNet: ``conv1, bn1, layer1, ..., layer4, fc``).

Pass ``blocks=[...]`` (qualified module names, input to output) to any function to use
another split. The head (the classifier that :func:`mlbook.models.heads.replace_head`
replaces, re-exported as ``mlbook.transfer.replace_head``) is the last block.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence

import torch
from torch import nn


def blocks(model: nn.Module, names: Sequence[str] | None = None) -> list[tuple[str, nn.Module]]:
    """The blocks of ``model``, input to output, as ``(qualified name, module)`` pairs.

    Parameters
    ----------
    model
        Any network.
    names
        Explicit qualified module names (``model.get_submodule`` spelling) to use instead of
        the automatic split described in the module docstring.

    Raises
    ------
    ValueError
        If a name in ``names`` is not a submodule of ``model`` (the message lists close names).
    """
    if names is not None:
        return [(n, _submodule(model, n)) for n in names]
    out: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if name == "features" and isinstance(child, nn.Sequential):
            out += [
                (f"features.{i}", c)
                for i, c in child.named_children()
                if any(True for _ in c.parameters())
            ]
        elif any(True for _ in child.parameters()):
            out.append((name, child))
    return out


def _submodule(model: nn.Module, name: str) -> nn.Module:
    """``model.get_submodule(name)`` with an error that lists the names that do exist."""
    try:
        return model.get_submodule(name)
    except AttributeError:
        known = [n for n, _ in model.named_modules() if n]
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.4)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"{type(model).__name__} has no layer named {name!r}{hint} "
            f"(top-level layers: {[n for n, _ in model.named_children()]})"
        ) from None


def _check_names(model: nn.Module, names: Sequence[str]) -> None:
    for n in names:
        _submodule(model, n)


def freeze(model: nn.Module, keep_trainable: Sequence[str] | str = ()) -> list[str]:
    """Stop gradients to every parameter except those inside the named layers.

    Parameters
    ----------
    model
        Changed in place (``requires_grad`` of its parameters).
    keep_trainable
        Qualified module names (``"head"``, ``"features.3"``, ``"layer4"``) whose parameters
        stay trainable. ``()`` freezes everything.

    Returns
    -------
    list of str
        The names of the parameters that are now frozen.

    Notes
    -----
    Freezing stops gradient updates only. BatchNorm's running mean and variance are
    *buffers* that ``model.train()`` keeps updating; call ``model.eval()`` (or
    :func:`batchnorm_eval`) on the frozen part when its statistics must not move either.
    """
    keep = (keep_trainable,) if isinstance(keep_trainable, str) else tuple(keep_trainable)
    _check_names(model, keep)
    frozen = []
    for name, p in model.named_parameters():
        trainable = any(name == k or name.startswith(k + ".") for k in keep)
        p.requires_grad_(trainable)
        if not trainable:
            frozen.append(name)
    return frozen


def unfreeze_all(model: nn.Module) -> None:
    """Make every parameter trainable again."""
    for p in model.parameters():
        p.requires_grad_(True)


def unfreeze_last(
    model: nn.Module, n_blocks: int, block_names: Sequence[str] | None = None
) -> list[str]:
    """Freeze the network, then make its last ``n_blocks`` blocks trainable.

    ``n_blocks=1`` trains only the head (feature extraction with a new linear head), the
    number of blocks (``len(blocks(model))``) is full fine-tuning.

    Parameters
    ----------
    n_blocks
        ``0 <= n_blocks <= len(blocks(model))``.
    block_names
        Explicit block names (see :func:`blocks`).

    Returns
    -------
    list of str
        The names of the trainable blocks.
    """
    found = [n for n, _ in blocks(model, block_names)]
    if (
        isinstance(n_blocks, bool)
        or not isinstance(n_blocks, int)
        or not 0 <= n_blocks <= len(found)
    ):
        raise ValueError(
            f"n_blocks must be an int in [0, {len(found)}] for this model (blocks: {found}), "
            f"got {n_blocks!r}"
        )
    trainable = found[len(found) - n_blocks :]
    freeze(model, keep_trainable=trainable)
    return trainable


def batchnorm_eval(model: nn.Module, only_frozen: bool = True) -> int:
    """Put BatchNorm layers in eval mode so their running statistics stop updating.

    Call it after ``model.train()``, which switches them back. With ``only_frozen`` only the
    BatchNorm layers whose parameters are all frozen are switched. Returns how many were.
    """
    count = 0
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters())
            if not only_frozen or all(not p.requires_grad for p in params):
                m.eval()
                count += 1
    return count


def layerwise_param_groups(
    model: nn.Module,
    base_lr: float,
    decay: float | None = None,
    lrs: Mapping[str, float] | Sequence[float] | None = None,
    block_names: Sequence[str] | None = None,
    **group_options,
) -> list[dict]:
    """One optimizer parameter group per block, with its own learning rate.

    Give either ``decay`` (geometric, "discriminative" rates: the last block, the head,
    gets ``base_lr`` and block ``i`` of ``L`` gets ``base_lr * decay ** (L - 1 - i)``, so
    earlier, more general layers move less) or explicit ``lrs`` (one per block, input to
    output, or a mapping ``block name -> lr``; blocks it does not name get ``base_lr``).
    With neither, every block gets ``base_lr``.

    Only trainable parameters (``requires_grad``) are included; blocks with none are left
    out, and parameters that belong to no block (rare) go into a group named ``"rest"``
    with ``base_lr``. Every group has a ``"name"`` key (the block name).

    Parameters
    ----------
    base_lr
        Learning rate of the last block, ``> 0``.
    decay
        Factor in ``(0, 1]`` per block towards the input.
    group_options
        Extra keys for every group (e.g. ``weight_decay=0``).

    Returns
    -------
    list of dict
        ``[{"name": ..., "params": [...], "lr": ...}, ...]``, ready for ``torch.optim``.
    """
    if not base_lr > 0:
        raise ValueError(f"base_lr must be > 0, got {base_lr}")
    if decay is not None and lrs is not None:
        raise ValueError("give either decay or lrs, not both")
    if decay is not None and not 0 < decay <= 1:
        raise ValueError(f"decay must lie in (0, 1], got {decay}")
    found = blocks(model, block_names)
    names = [n for n, _ in found]
    if lrs is None:
        factor = 1.0 if decay is None else decay
        rate = {n: base_lr * factor ** (len(names) - 1 - i) for i, n in enumerate(names)}
    elif isinstance(lrs, Mapping):
        unknown = sorted(set(lrs) - set(names))
        if unknown:
            raise ValueError(f"lrs names unknown blocks {unknown}; the blocks are {names}")
        rate = {n: float(lrs.get(n, base_lr)) for n in names}
    else:
        if len(lrs) != len(names):
            raise ValueError(
                f"lrs has {len(lrs)} rates but the model has {len(names)} blocks {names}"
            )
        rate = {n: float(lr) for n, lr in zip(names, lrs, strict=True)}
    bad = {n: r for n, r in rate.items() if not r > 0}
    if bad:
        raise ValueError(f"learning rates must be > 0, got {bad}")

    seen: set[int] = set()
    groups = []
    for name, module in found:
        params = [p for p in module.parameters() if p.requires_grad and id(p) not in seen]
        seen.update(id(p) for p in params)
        if params:
            groups.append({"name": name, "params": params, "lr": rate[name], **group_options})
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in seen]
    if rest:
        groups.append({"name": "rest", "params": rest, "lr": base_lr, **group_options})
    if not groups:
        raise ValueError("the model has no trainable parameters; unfreeze something first")
    return groups


def trainable_parameters(model: nn.Module) -> list[torch.nn.Parameter]:
    """The parameters with ``requires_grad``, for an optimizer."""
    return [p for p in model.parameters() if p.requires_grad]
