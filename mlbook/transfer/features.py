"""Feature extraction: a frozen backbone computes the features once, a linear model learns on them.

This is the cheapest way to transfer (Yosinski et al. 2014; Tian et al. 2020 show it is a
strong few-shot baseline): the backbone runs once per image under
``torch.inference_mode()``, and the classifiers here are trained on the cached features.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn


def extract_features(
    backbone: nn.Module,
    images: torch.Tensor,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Embed ``images`` with ``backbone`` in eval mode, once, without building a graph.

    Parameters
    ----------
    backbone
        Maps ``[B, C, H, W]`` to ``[B, D]`` (a model whose head is ``nn.Identity``, or its
        ``.features``). Its train/eval mode is restored afterwards.
    images
        ``[M, C, H, W]``.
    batch_size
        Images per forward pass (memory, not results, depends on it: eval mode).
    device
        Where to compute; default the device of the backbone's first parameter.

    Returns
    -------
    torch.Tensor
        float ``[M, D]`` on the CPU.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be [M, C, H, W], got shape {tuple(images.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if device is None:
        p = next(backbone.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    was_training = backbone.training
    backbone.eval()
    out = []
    try:
        with torch.inference_mode():
            for start in range(0, images.shape[0], batch_size):
                batch = images[start : start + batch_size].to(device)
                feats = backbone(batch)
                out.append(feats.flatten(1).float().cpu())
    finally:
        backbone.train(was_training)
    if not out:
        raise ValueError("images is empty")
    return torch.cat(out)


def _numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class _Classifier:
    """``score`` shared by the probes: mean accuracy of :meth:`predict`, in [0, 1]."""

    def predict(self, features):  # pragma: no cover - overridden
        raise NotImplementedError

    def score(
        self, features: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray
    ) -> float:
        """Accuracy of :meth:`predict` on ``features [M, D]`` against ``labels [M]``."""
        return float((self.predict(features) == _numpy(labels)).mean())


def _check_xy(features, labels) -> tuple[np.ndarray, np.ndarray]:
    x, y = _numpy(features), _numpy(labels)
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"need features [M, D] and labels [M], got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    return x.astype(np.float64), y


class LinearProbe(_Classifier):
    """Multinomial logistic regression on (L2-normalised) features, scikit-learn style.

    Parameters
    ----------
    C
        Inverse L2 regularisation strength of scikit-learn's ``LogisticRegression``.
    normalise
        Divide each feature vector by its Euclidean norm first, as Tian et al. (2020) do
        for few-shot probes: it makes one ``C`` work across backbones and shots.
    max_iter
        Iterations of the L-BFGS solver.
    """

    def __init__(self, C: float = 10.0, normalise: bool = True, max_iter: int = 1000) -> None:
        if not C > 0:
            raise ValueError(f"C must be > 0, got {C}")
        self.C, self.normalise, self.max_iter = C, normalise, max_iter
        self.model: LogisticRegression | None = None

    def _prep(self, x: np.ndarray) -> np.ndarray:
        return _l2_normalise(x) if self.normalise else x

    def fit(
        self, features: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray
    ) -> LinearProbe:
        """Fit on ``features [M, D]`` and integer ``labels [M]``; returns ``self``."""
        x, y = _check_xy(features, labels)
        if np.unique(y).size < 2:
            raise ValueError("a probe needs at least 2 classes in labels")
        self.model = LogisticRegression(C=self.C, max_iter=self.max_iter)
        self.model.fit(self._prep(x), y)
        return self

    def predict(self, features: torch.Tensor | np.ndarray) -> np.ndarray:
        """Predicted labels ``[M]``."""
        if self.model is None:
            raise RuntimeError("call fit() before predict()")
        return self.model.predict(self._prep(_numpy(features).astype(np.float64)))


class NearestCentroid(_Classifier):
    """Assign each example to the class whose mean support feature is closest.

    ``metric="euclidean"`` is the Prototypical Networks rule (Snell et al. 2017) on a
    fixed embedding; ``"cosine"`` normalises features and centroids first.
    """

    def __init__(self, metric: str = "euclidean") -> None:
        if metric not in ("euclidean", "cosine"):
            raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")
        self.metric = metric
        self.classes: np.ndarray | None = None
        self.centroids: np.ndarray | None = None

    def fit(self, features, labels) -> NearestCentroid:
        x, y = _check_xy(features, labels)
        if self.metric == "cosine":
            x = _l2_normalise(x)
        self.classes = np.unique(y)
        self.centroids = np.stack([x[y == c].mean(0) for c in self.classes])
        if self.metric == "cosine":
            self.centroids = _l2_normalise(self.centroids)
        return self

    def predict(self, features) -> np.ndarray:
        if self.centroids is None:
            raise RuntimeError("call fit() before predict()")
        x = _numpy(features).astype(np.float64)
        if self.metric == "cosine":
            x = _l2_normalise(x)
        d = ((x[:, None, :] - self.centroids[None]) ** 2).sum(-1)
        return self.classes[d.argmin(1)]
