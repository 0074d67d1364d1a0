"""scikit-learn's digits as 28x28 images and as a per-class tensor."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits

from mlbook.data import digits_by_class, digits_images, sample_episodes


def test_digits_images_shapes_range_and_values():
    images, labels = digits_images()
    assert images.shape == (1797, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (1797,) and labels.dtype == torch.int64
    assert labels.unique().tolist() == list(range(10))
    assert images.min() >= 0.0 and images.max() <= 1.0 and images.max() > 0.9
    original, _ = digits_images(image_size=8)
    ref = torch.as_tensor(load_digits().images, dtype=torch.float32) / 16
    torch.testing.assert_close(original[:, 0], ref)
    # bilinear upsampling keeps the average brightness roughly (ink = high values)
    torch.testing.assert_close(images.mean(), original.mean(), atol=0.02, rtol=0)
    # exact 2x bilinear (align_corners=False): output pixel (0, 0) samples source
    # coordinate -0.25, clamped to the corner, so it equals the corner pixel; output (1, 1)
    # samples (0.25, 0.25): weights 9/16, 3/16, 3/16, 1/16
    up = digits_images(image_size=16)[0][:, 0]
    torch.testing.assert_close(up[:, 0, 0], ref[:, 0, 0])
    want = (9 * ref[:, 0, 0] + 3 * ref[:, 0, 1] + 3 * ref[:, 1, 0] + ref[:, 1, 1]) / 16
    torch.testing.assert_close(up[:, 1, 1], want)


def test_digits_by_class():
    per_class = digits_by_class()
    assert per_class.shape == (10, 174, 1, 28, 28)  # 174 = size of the smallest class
    images, labels = digits_images()
    assert torch.equal(per_class[3, :5], images[labels == 3][:5])
    assert digits_by_class(image_size=8, per_class=10).shape == (10, 10, 1, 8, 8)
    ep = sample_episodes(per_class, n_way=5, k_shot=1, q_queries=5, num_tasks=2)
    assert ep.support_x.shape == (2, 5, 1, 28, 28)


@pytest.mark.parametrize("per_class", [0, 175, 2.5])
def test_digits_by_class_errors(per_class):
    with pytest.raises(ValueError, match="per_class must be an int in 1..174"):
        digits_by_class(per_class=per_class)


def test_bad_image_size():
    with pytest.raises(ValueError, match="image_size"):
        digits_images(image_size=0)
