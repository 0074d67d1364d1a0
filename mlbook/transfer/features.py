"""Feature extraction: a frozen backbone computes the features once, a linear model learns on them.

This is the cheapest way to transfer (Yosinski et al. 2014; Tian et al. 2020 show it is a
strong few-shot baseline): the backbone runs once per image under
``torch.inference_mode()`` (:func:`extract_features`, a torch tensor), and a scikit-learn
classifier is trained on the cached features: :func:`linear_probe` (logistic regression) or
:class:`PrototypeClassifier` (nearest class mean).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, Normalizer
from sklearn.utils.validation import check_array, check_is_fitted, check_X_y
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


def _as_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _as_float64(x) -> np.ndarray:
    """Features as a float64 NumPy array (torch tensors included): L-BFGS in double precision."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
    return np.asarray(x, dtype=np.float64)


def linear_probe(C: float = 10.0, normalise: bool = True, max_iter: int = 1000) -> Pipeline:
    """Multinomial logistic regression on (L2-normalised) features: a scikit-learn pipeline.

    The pipeline is ``float64 -> Normalizer() -> LogisticRegression(C, max_iter)``: it has
    ``fit``, ``predict``, ``score`` (mean accuracy, a float) and works with
    ``sklearn.base.clone`` and grid searches. Features may be torch tensors or arrays
    ``[M, D]``, labels integers ``[M]``. For a nearest-centroid probe (the Prototypical
    Networks rule on a fixed embedding) use :class:`PrototypeClassifier`.

    Parameters
    ----------
    C
        Inverse L2 regularisation strength of ``LogisticRegression``, ``> 0``.
    normalise
        Divide each feature vector by its Euclidean norm first, as Tian et al. (2020) do
        for few-shot probes: it makes one ``C`` work across backbones and shots.
    max_iter
        Iterations of the L-BFGS solver.
    """
    if not C > 0:
        raise ValueError(f"C must be > 0 (inverse regularisation strength), got {C}")
    steps: list = [FunctionTransformer(_as_float64)]
    if normalise:
        steps.append(Normalizer(norm="l2"))
    steps.append(LogisticRegression(C=C, max_iter=max_iter))
    return make_pipeline(*steps)


class PrototypeClassifier(ClassifierMixin, BaseEstimator):
    """Nearest class mean ("prototype") on fixed features, a scikit-learn estimator.

    The Prototypical Networks rule (Snell et al. 2017) on a frozen embedding: each class is
    represented by the mean of its support features and an example goes to the class with
    the nearest mean in squared Euclidean distance. ``metric="cosine"`` L2-normalises the
    features and the means first.

    It follows scikit-learn's conventions (``get_params``, ``clone``, fitted attributes
    ``classes_`` and ``centroids_``, ``score`` = mean accuracy as a float).
    ``sklearn.neighbors.NearestCentroid`` gives the same predictions for the Euclidean
    metric but also estimates a within-class spread for its shrinkage option, which warns
    (division by zero) in the one-shot case every chapter of this book uses.

    Parameters
    ----------
    metric
        ``"euclidean"`` or ``"cosine"``.
    """

    def __init__(self, metric: str = "euclidean") -> None:
        self.metric = metric

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        if self.metric == "cosine":
            return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return x

    def fit(self, X, y) -> PrototypeClassifier:
        """Store the mean of the features ``X [M, D]`` of each class of ``y [M]``."""
        if self.metric not in ("euclidean", "cosine"):
            raise ValueError(f"metric must be 'euclidean' or 'cosine', got {self.metric!r}")
        x, y = check_X_y(_as_float64(X), _as_numpy(y))
        x = self._prepare(x)
        self.classes_, y_index = np.unique(y, return_inverse=True)
        self.centroids_ = self._prepare(
            np.stack([x[y_index == c].mean(0) for c in range(len(self.classes_))])
        )
        return self

    def predict(self, X) -> np.ndarray:
        """The label of the nearest class mean for each row of ``X [M, D]``."""
        check_is_fitted(self)
        x = self._prepare(check_array(_as_float64(X)))
        distances = ((x[:, None, :] - self.centroids_[None]) ** 2).sum(-1)
        return self.classes_[distances.argmin(1)]
