"""Rotation prediction: the rotated images and their labels, and the batches."""

from __future__ import annotations

import itertools

import pytest
import torch

from mlbook.transfer import rotate_images, rotation_batches


def test_rotation_labels_match_the_rotations():
    # an image with one bright pixel at the top left: each rotation moves it to another corner
    image = torch.zeros(1, 1, 3, 3)
    image[0, 0, 0, 0] = 1.0
    rotated, labels = rotate_images(image)
    assert rotated.shape == (4, 1, 3, 3) and labels.tolist() == [0, 1, 2, 3]
    corners = [tuple(int(i) for i in (r[0] == 1).nonzero()[0]) for r in rotated]
    # counter-clockwise: top left -> bottom left -> bottom right -> top right
    assert corners == [(0, 0), (2, 0), (2, 2), (0, 2)]


def test_rotate_images_layout_and_inverse():
    images = torch.rand(5, 2, 4, 4)
    rotated, labels = rotate_images(images)
    assert labels.tolist() == [k for k in range(4) for _ in range(5)]
    for k in range(4):
        block = rotated[k * 5:(k + 1) * 5]
        assert torch.equal(torch.rot90(block, -k, dims=(-2, -1)), images)


@pytest.mark.parametrize("shape", [(4, 4), (2, 1, 4, 5)])
def test_rotate_images_rejects_bad_shapes(shape):
    with pytest.raises(ValueError, match="images must be"):
        rotate_images(torch.zeros(shape))


def test_rotation_batches_are_balanced_seeded_and_cover_the_data():
    images = torch.arange(12, dtype=torch.float32).view(12, 1, 1, 1).expand(12, 1, 2, 2)
    batches = list(itertools.islice(rotation_batches(images, batch_size=8, seed=1), 6))
    again = list(itertools.islice(rotation_batches(images, batch_size=8, seed=1), 6))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again, strict=True))
    for x, y in batches:
        assert x.shape == (8, 1, 2, 2) and torch.bincount(y, minlength=4).tolist() == [2] * 4
    first_pass = torch.cat([x[:2, 0, 0, 0] for x, _ in batches[:6]])  # 6 batches x 2 images
    assert sorted(first_pass.tolist()) == list(range(12))


@pytest.mark.parametrize("batch_size", [0, 6, 52])
def test_rotation_batches_reject_bad_batch_size(batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        next(rotation_batches(torch.zeros(12, 1, 2, 2), batch_size=batch_size))
