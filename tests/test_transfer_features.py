"""Feature extraction runs the backbone once; the probes are scikit-learn estimators."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestCentroid
from torch import nn

from mlbook.models import Conv4
from mlbook.transfer import PrototypeClassifier, extract_features, linear_probe


def test_features_are_computed_once_without_grad_in_eval_mode():
    backbone = Conv4(in_channels=1, hidden=4, image_size=16)
    calls = []
    backbone.register_forward_hook(
        lambda m, inp, out: calls.append((inp[0].shape[0], m.training, torch.is_grad_enabled()))
    )
    backbone.train()
    images = torch.randn(10, 1, 16, 16)
    feats = extract_features(backbone, images, batch_size=4)
    assert feats.shape == (10, backbone.feature_dim) and not feats.requires_grad
    assert calls == [(4, False, False), (4, False, False), (2, False, False)]  # one pass per batch
    assert backbone.training  # mode restored
    backbone.eval()
    with torch.no_grad():
        torch.testing.assert_close(feats, backbone(images))


def test_extract_features_bad_input():
    with pytest.raises(ValueError, match=r"\[M, C, H, W\]"):
        extract_features(nn.Flatten(), torch.randn(3, 16, 16))


def blobs(seed: int = 0, n: int = 20):
    """Three well separated Gaussian classes in 5 dimensions."""
    g = np.random.default_rng(seed)
    centres = np.eye(5)[:3] * 4
    y = np.repeat(np.arange(3), n)
    return centres[y] + g.normal(scale=0.5, size=(3 * n, 5)), y


@pytest.mark.parametrize(
    "probe",
    [linear_probe(), linear_probe(normalise=False, C=1.0), PrototypeClassifier(),
     PrototypeClassifier("cosine")],
    ids=["normalised", "raw", "centroid", "cosine-centroid"],
)
def test_probes_separate_separable_classes(probe):
    x, y = blobs(0)
    xt, yt = blobs(1)
    assert probe.fit(torch.from_numpy(x).float(), torch.from_numpy(y)) is probe
    assert probe.predict(xt).shape == (60,)
    score = probe.score(torch.from_numpy(xt).float(), torch.from_numpy(yt))
    assert isinstance(score, float) and score > 0.95


def test_linear_probe_is_logistic_regression_on_normalised_float64_features():
    x, y = blobs(0)
    x32 = torch.from_numpy(3 * x).float()  # a torch tensor in, scaled: the norm removes it
    probe = linear_probe(C=2.0).fit(x32, torch.from_numpy(y))
    ref_x = x32.double().numpy()
    ref_x /= np.linalg.norm(ref_x, axis=1, keepdims=True)
    ref = LogisticRegression(C=2.0, max_iter=1000).fit(ref_x, y)
    np.testing.assert_allclose(probe[-1].coef_, ref.coef_, rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(probe.predict(x32), ref.predict(ref_x))
    assert probe[-1].coef_.dtype == np.float64


def test_linear_probe_follows_scikit_learn_conventions():
    probe = linear_probe(C=3.0, max_iter=50)
    assert probe.get_params()["logisticregression__C"] == 3.0
    copy = clone(probe)
    assert copy is not probe and copy.get_params()["logisticregression__max_iter"] == 50
    x, y = blobs(0)
    copy.fit(x, y)
    assert hasattr(copy[-1], "coef_") and not hasattr(probe[-1], "coef_")  # clone is unfitted


def test_prototypes_match_hand_computation_and_sklearn_nearest_centroid():
    x = np.array([[0.0, 0.0], [2.0, 0.0], [10.0, 10.0]])
    y = np.array([3, 3, 7])
    probe = PrototypeClassifier().fit(x, y)
    np.testing.assert_allclose(probe.centroids_, [[1.0, 0.0], [10.0, 10.0]])
    assert probe.classes_.tolist() == [3, 7]
    assert probe.predict(np.array([[5.0, 4.0], [6.0, 6.0]])).tolist() == [3, 7]
    assert probe.score(np.array([[5.0, 4.0], [6.0, 6.0]]), np.array([3, 3])) == 0.5
    xs, ys = blobs(0, n=4)
    xt, _ = blobs(1)
    ours = PrototypeClassifier().fit(xs, ys).predict(xt)
    np.testing.assert_array_equal(ours, NearestCentroid().fit(xs, ys).predict(xt))


def test_prototypes_one_shot_is_silent_and_cloneable():
    x, y = blobs(0, n=1)  # one example per class: sklearn's NearestCentroid warns here
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        probe = clone(PrototypeClassifier("cosine")).fit(x, y)
    np.testing.assert_allclose(np.linalg.norm(probe.centroids_, axis=1), 1.0)
    assert probe.get_params() == {"metric": "cosine"}


def test_probe_errors():
    with pytest.raises(NotFittedError, match="not fitted"):
        linear_probe().predict(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="at least 2 classes"):
        linear_probe().fit(np.ones((2, 3)), np.zeros(2))
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        PrototypeClassifier().fit(np.zeros((2, 3)), np.zeros(3))
    with pytest.raises(NotFittedError):
        PrototypeClassifier().predict(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="metric must be"):
        PrototypeClassifier("manhattan").fit(np.zeros((2, 3)), np.arange(2))
    with pytest.raises(ValueError, match="C must be > 0"):
        linear_probe(C=0)
