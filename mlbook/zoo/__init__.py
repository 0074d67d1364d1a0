"""mlbook.zoo: meta-trained few-shot learners shipped with the package.

Every model was trained by ``benchmarks/train_zoo.py NAME`` at a clean commit; its weights
(a state dict) and what is known about its training (method, split, shots, test-time
adaptation, command, commit, machine, time, sha256, test accuracy) ship as package data,
so ``pip install`` gives them offline (Colab included)::

    >>> from mlbook import zoo
    >>> zoo.available()
    ['anil-5w1s', 'fomaml-5w1s', 'maml-5w1s', ..., 'protonet-1shot', ...]
    >>> learner = zoo.load("protonet-1shot")       # a ready mlbook.meta.ProtoNet
    >>> zoo.info("protonet-1shot")["test"]          # accuracies measured after training

Loading checks the file's sha256 against the recorded one and reads it with
``torch.load(weights_only=True)``; a missing or altered file, an unknown name or a state dict
that does not fit the architecture raises :class:`ZooError` saying what to do.
"""

from __future__ import annotations

import json
import pickle
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from mlbook.data._files import sha256sum
from mlbook.meta import MAML, InContextLearner, ProtoNet, Reptile
from mlbook.models import Conv4

METHODS = ("protonet", "maml", "fomaml", "anil", "metasgd", "reptile", "transfer", "icl")
SPLITS = ("standard", "lake-background")
#: Keys every entry of the zoo's index has.
REQUIRED_KEYS = ("method", "split", "n_way", "k_shot", "image_size", "inner_lr", "inner_steps",
                 "train_command", "commit", "machine", "train_seconds", "steps", "seed",
                 "sha256", "file")


class Published(NamedTuple):
    """A published Omniglot accuracy (percent), its paper (``source``, e.g. "Snell et al.
    2017") and how that paper tested where it differs from the zoo's (``protocol``)."""

    accuracy: float
    source: str
    protocol: str = ""

    @property
    def cited(self) -> str:
        """``"source: protocol"`` (the source alone when no protocol is recorded)."""
        return f"{self.source}: {self.protocol}" if self.protocol else self.source


_ROTATED = "rotated test classes"
_SNELL = ("Snell et al. 2017", _ROTATED)
_FINN = ("Finn et al. 2017", _ROTATED + ", transductive batch norm")
#: The published Omniglot accuracies the zoo's models are set beside, with each paper's test
#: protocol, by ``(method, setting)``. The README's zoo table and the few-shot chapter both
#: read them from here.
PUBLISHED: dict[tuple[str, str], Published] = {
    ("protonet", "5w1s"): Published(98.8, *_SNELL), ("protonet", "5w5s"): Published(99.7, *_SNELL),
    ("protonet", "20w1s"): Published(96.0, *_SNELL),
    ("protonet", "20w5s"): Published(98.9, *_SNELL),
    ("maml", "5w1s"): Published(98.7, *_FINN), ("fomaml", "5w1s"): Published(98.3, *_FINN),
    ("metasgd", "5w1s"): Published(99.53, "Li et al. 2017"),
    ("reptile", "5w1s"): Published(97.68, "Nichol et al. 2018",
                                   "unrotated test classes, transductive"),
}


class ZooError(RuntimeError):
    """A zoo model cannot be found, verified or loaded."""


def zoo_dir() -> Path:
    """The zoo's folder: ``models.json`` (the index) and ``weights/`` (one file a model)."""
    return Path(str(resources.files("mlbook.zoo")))


def weights_dir() -> Path:
    """The folder of the shipped weight files."""
    return zoo_dir() / "weights"


def _index() -> dict[str, dict[str, Any]]:
    path = zoo_dir() / "models.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def available() -> list[str]:
    """Names of the shipped models, sorted."""
    return sorted(_index())


def info(name: str) -> dict[str, Any]:
    """What is recorded about model ``name`` (a copy): see :data:`REQUIRED_KEYS`."""
    index = _index()
    if name not in index:
        raise ZooError(f"no zoo model named {name!r}; available: {sorted(index) or 'none'}")
    return json.loads(json.dumps(index[name]))


def build_learner(method: str, n_way: int, image_size: int = 28, inner_lr: float | None = None,
                  inner_steps: int | None = None, inner_batch: int | None = None,
                  **_: Any) -> nn.Module:
    """An untrained learner with the architecture the zoo uses for ``method``.

    ``protonet`` and ``transfer``: a ProtoNet around ``Conv4()`` (64-d embedding; for
    ``transfer`` the Conv4 trunk of a classifier, used as a fixed embedding). The MAML family
    and Reptile: ``Conv4(num_classes=n_way, track_running_stats=False)`` (batch statistics).
    ``icl``: an :class:`~mlbook.meta.InContextLearner` over ``Conv4()`` features (64-d,
    ordinary batch norm), a 4-layer transformer of width 128 with 4 heads. ``inner_batch``
    is Reptile's training minibatch (:class:`~mlbook.meta.Reptile`); it does not change
    the weights' layout.
    """
    if method not in METHODS:
        raise ZooError(f"unknown method {method!r}; known: {list(METHODS)}")
    if method == "icl":
        return InContextLearner(Conv4(1, 64, num_classes=None, image_size=image_size),
                                feature_dim=64, n_way=n_way, d_model=128, num_layers=4,
                                num_heads=4)
    if method in ("protonet", "transfer"):
        return ProtoNet(Conv4(1, 64, num_classes=None, image_size=image_size))
    model = Conv4(1, 64, num_classes=n_way, image_size=image_size, track_running_stats=False)
    if method == "reptile":
        return Reptile(model, inner_lr=inner_lr or 1e-3, inner_steps=inner_steps or 5,
                       inner_batch=inner_batch)
    return MAML(model, inner_lr=inner_lr or 0.4, inner_steps=inner_steps or 1,
                first_order=method == "fomaml", learn_inner_lr=method == "metasgd",
                adapt="head" if method == "anil" else "all", loss_fn=F.cross_entropy)


def load(name: str, map_location: str | torch.device = "cpu") -> nn.Module:
    """The trained learner ``name``, verified and ready (in eval mode).

    A :class:`~mlbook.meta.ProtoNet` keeps its network at ``.encoder``, a
    :class:`~mlbook.meta.MAML` or :class:`~mlbook.meta.Reptile` at ``.model``.

    Raises
    ------
    ZooError
        Unknown name, missing file, sha256 mismatch, or weights that do not fit.
    """
    meta = info(name)
    path = weights_dir() / meta["file"]
    if not path.is_file():
        raise ZooError(f"the weights of {name!r} are missing ({meta['file']} not in the "
                       "installed package); reinstall mlbook")
    digest = sha256sum(path)
    if digest != meta["sha256"]:
        raise ZooError(f"{meta['file']} has sha256 {digest}, the zoo recorded {meta['sha256']}: "
                       "the file is damaged or was replaced; reinstall mlbook")
    learner = build_learner(**meta)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ZooError(f"{meta['file']} is not a plain state dict (weights_only=True refused "
                       f"it: {str(exc).splitlines()[0]})") from exc
    try:
        learner.load_state_dict(state)
    except RuntimeError as exc:
        raise ZooError(f"the weights of {name!r} do not fit a {meta['method']} learner: "
                       f"{exc}") from exc
    return learner.eval()
