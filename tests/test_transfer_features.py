"""Feature extraction runs the backbone once; probes fit, predict and score like scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mlbook.models import Conv4
from mlbook.transfer import LinearProbe, NearestCentroid, extract_features


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
    [
        LinearProbe(),
        LinearProbe(normalise=False, C=1.0),
        NearestCentroid(),
        NearestCentroid("cosine"),
    ],
)
def test_probes_separate_separable_classes(probe):
    x, y = blobs(0)
    xt, yt = blobs(1)
    assert probe.fit(torch.from_numpy(x), torch.from_numpy(y)) is probe
    assert probe.predict(xt).shape == (60,)
    assert probe.score(xt, yt) > 0.95


def test_nearest_centroid_matches_hand_computation():
    x = np.array([[0.0, 0.0], [2.0, 0.0], [10.0, 10.0]])
    y = np.array([0, 0, 1])
    probe = NearestCentroid().fit(x, y)
    np.testing.assert_allclose(probe.centroids, [[1.0, 0.0], [10.0, 10.0]])
    assert probe.predict(np.array([[5.0, 4.0], [6.0, 6.0]])).tolist() == [0, 1]
    assert probe.score(np.array([[5.0, 4.0], [6.0, 6.0]]), np.array([0, 0])) == 0.5


def test_probe_errors():
    with pytest.raises(RuntimeError, match="fit"):
        LinearProbe().predict(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="at least 2 classes"):
        LinearProbe().fit(np.zeros((2, 3)), np.zeros(2))
    with pytest.raises(ValueError, match=r"features \[M, D\] and labels \[M\]"):
        NearestCentroid().fit(np.zeros((2, 3)), np.zeros(3))
    with pytest.raises(ValueError, match="C must be"):
        LinearProbe(C=0)
