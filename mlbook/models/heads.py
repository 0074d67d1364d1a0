"""The classification head of a network: find it, replace it with a new ``nn.Linear``.

A head is looked for under the attribute names :data:`HEAD_NAMES` (``head`` in mlbook's
networks, ``fc`` in torchvision's ResNets, the last ``nn.Linear`` of ``classifier`` in its
VGG/EfficientNet/MobileNet). :mod:`mlbook.transfer` re-exports these functions for
fine-tuning; :func:`mlbook.models.torchvision_model` uses them to give a pretrained network
a head of another size.
"""

from __future__ import annotations

from torch import nn

#: Attribute names under which a classification head is looked for, in this order.
HEAD_NAMES = ("head", "fc", "classifier")


def find_head(model: nn.Module) -> tuple[str, nn.Module]:
    """The classification head: the first of ``head``, ``fc``, ``classifier`` that exists.

    For a ``classifier`` that is an ``nn.Sequential`` (torchvision's EfficientNet, VGG,
    MobileNet), the head is its last ``nn.Linear``, e.g. ``"classifier.1"``.
    """
    for name in HEAD_NAMES:
        module = getattr(model, name, None)
        if module is None:
            continue
        if isinstance(module, nn.Sequential):
            linears = [(i, m) for i, m in module.named_children() if isinstance(m, nn.Linear)]
            if linears:
                return f"{name}.{linears[-1][0]}", linears[-1][1]
        return name, module
    raise ValueError(
        f"{type(model).__name__} has none of the head attributes {HEAD_NAMES}; "
        "give the network a `head` module (e.g. nn.Identity()) or replace it yourself"
    )


def _feature_dim(model: nn.Module, head: nn.Module) -> int:
    if isinstance(head, nn.Linear):
        return head.in_features
    dim = getattr(model, "feature_dim", None)
    if isinstance(dim, int):
        return dim
    raise ValueError(
        f"cannot tell the feature size of {type(model).__name__}: its head is "
        f"{type(head).__name__}, not nn.Linear, and it has no int `feature_dim`"
    )


def replace_head(model: nn.Module, num_classes: int, bias: bool = True) -> nn.Linear:
    """Put a new, randomly initialised ``nn.Linear(feature_dim, num_classes)`` in place of the head.

    The new head sits where the old one was (``model.head``, ``model.fc`` or the last linear
    layer of ``model.classifier``), on the old head's device and dtype, and is trainable.

    Parameters
    ----------
    model
        Changed in place.
    num_classes
        Classes of the target task, ``>= 1``.

    Returns
    -------
    nn.Linear
        The new head (also reachable through the model).
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
    name, old = find_head(model)
    in_features = _feature_dim(model, old)
    ref = next(iter(old.parameters()), None)
    if ref is None:
        ref = next(iter(model.parameters()))
    new = nn.Linear(in_features, num_classes, bias=bias).to(device=ref.device, dtype=ref.dtype)
    setattr_head(model, name, new)
    return new


def setattr_head(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` at the qualified attribute ``name`` of ``model`` (e.g. ``"classifier.1"``)."""
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, module)
