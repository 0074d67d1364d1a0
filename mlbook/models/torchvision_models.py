"""Any torchvision classification network by name, with its pretrained weights if asked.

Weights are spelled as torchvision spells them (``"IMAGENET1K_V1"``, ``"DEFAULT"``, the
full ``"ResNet18_Weights.IMAGENET1K_V1"`` or the enum member itself). They are read from
torch's standard hub cache, ``torch.hub.get_dir()/checkpoints/<file name of weights.url>``
(``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``), and
downloaded there only when the file is missing. Offline, copy the file there by hand; the
error message names it.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn
from torch.hub import HASH_REGEX
from torchvision.models import WeightsEnum, get_model, get_model_weights, list_models

from mlbook import _io
from mlbook._env import DataNotFoundError
from mlbook.models.heads import replace_head


def classification_models() -> list[str]:
    """Names of torchvision's classification models (``"resnet18"``, ``"efficientnet_b0"``, ...)."""
    return list_models(module=torchvision.models)


def resolve_weights(name: str, weights: str | WeightsEnum | None) -> WeightsEnum | None:
    """The weights enum member ``weights`` names for model ``name`` (``None`` stays ``None``)."""
    if weights is None:
        return None
    enum = get_model_weights(name)
    if isinstance(weights, WeightsEnum):
        if not isinstance(weights, enum):
            raise ValueError(f"{weights!r} are not weights of {name!r}; choose one of {list(enum)}")
        return weights
    if not isinstance(weights, str):
        raise TypeError(
            "weights must be None, a str or a torchvision WeightsEnum, "
            f"got {type(weights).__name__}"
        )
    key = weights.split(".")[-1] if weights.startswith(enum.__name__ + ".") else weights
    try:
        return enum[key]
    except KeyError:
        choices = ["DEFAULT", *enum.__members__]
        raise ValueError(f"{name!r} has no weights {weights!r}; choose one of {choices}") from None


def weights_path(weights: WeightsEnum) -> Path:
    """Where torch's hub cache keeps (or will keep) the file of ``weights``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def torchvision_model(
    name: str,
    weights: str | WeightsEnum | None = None,
    num_classes: int | None = None,
    download: bool = True,
) -> nn.Module:
    """Build torchvision's classification model ``name``, optionally with pretrained weights.

    Parameters
    ----------
    name
        A name of :func:`classification_models`, e.g. ``"resnet18"``.
    weights
        ``None`` (random initialisation), ``"DEFAULT"``, ``"IMAGENET1K_V1"``, ... or a
        ``WeightsEnum`` member.
    num_classes
        Size of the output layer. With weights, the pretrained head (1000 ImageNet classes)
        is replaced by a new random ``nn.Linear`` when ``num_classes`` differs from it (see
        :func:`mlbook.models.heads.replace_head`).
    download
        Fetch missing weights from torchvision's URL into the hub cache. With ``False``, or
        when the download fails (offline), a :class:`mlbook.DataNotFoundError` says which
        file to put where.

    Notes
    -----
    Cached weights are loaded with ``torch.load(weights_only=True)`` into the model that
    :func:`builder_arguments` describes, with ``load_state_dict`` (strict): torchvision's own
    loader uses ``weights_only=False`` on older PyTorch versions, which would unpickle
    arbitrary objects.
    """
    known = classification_models()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=6, cutoff=0.5)
        hint = f"; close names: {close}" if close else ""
        raise ValueError(
            f"unknown torchvision classification model {name!r}{hint} "
            "(mlbook.models.classification_models() lists all)"
        )
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise ValueError(f"num_classes must be an int >= 1 or None, got {num_classes!r}")
    resolved = resolve_weights(name, weights)
    if resolved is None:
        return get_model(name, **({"num_classes": num_classes} if num_classes else {}))

    path = weights_path(resolved)
    if not path.is_file():
        message = (
            f"the weights {resolved!r} of {name!r} are not in the torch hub cache: put the file "
            f"{path.name} (from {resolved.url}) at {path} (the folder is "
            "torch.hub.get_dir()/checkpoints; set TORCH_HOME to use another)"
        )
        if not download:
            raise DataNotFoundError(message)
        # torchvision's file names carry the first digits of the file's sha256
        # (resnet18-f37072fd.pth): the download is checked against them.
        match = HASH_REGEX.search(path.name)
        try:
            _io.download(resolved.url, path, sha256=match.group(1) if match else None)
        except Exception as err:  # offline: URLError, OSError, a blocked socket, ...
            raise DataNotFoundError(f"{message}. Download failed: {err}") from err

    model = get_model(name, **builder_arguments(name, resolved))
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    if name == "googlenet":  # as torchvision's builder: the auxiliary heads only help training
        model.aux_logits, model.aux1, model.aux2 = False, None, None
    if num_classes is not None and num_classes != len(resolved.meta["categories"]):
        replace_head(model, num_classes)
    return model


def builder_arguments(name: str, weights: WeightsEnum) -> dict:
    """The constructor arguments torchvision's builder sets when it loads ``weights``.

    Most are implied by the state dict (a wrong one fails ``load_state_dict``), but
    ``transform_input`` of GoogLeNet and Inception-v3 changes only the forward pass: their
    ImageNet weights expect it on. The table follows ``torchvision.models``' builders.
    """
    kwargs: dict = {"num_classes": len(weights.meta["categories"])}
    if name in ("googlenet", "inception_v3"):
        kwargs.update(transform_input=True, aux_logits=True, init_weights=False)
    elif name.startswith("vit_"):
        kwargs["image_size"] = weights.meta["min_size"][0]
    elif name == "maxvit_t":
        kwargs["input_size"] = weights.meta["min_size"]
    return kwargs
