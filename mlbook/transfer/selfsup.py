"""Self-supervised pretraining with a pretext task: rotation prediction (Gidaris et al. 2018).

Unlabelled images make their own labels: rotate each by 0, 90, 180 or 270 degrees and train a
network to say which. To answer, it must find the strokes' orientation and shape, features a
probe can then use for the real task. :func:`rotate_images` builds the four rotated copies with
their labels; :func:`rotation_batches` yields endless seeded batches of them for
:func:`mlbook.transfer.fit`, exactly like labelled ``(x, y)`` batches.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

ROTATIONS = 4  # 0, 90, 180 and 270 degrees


def rotate_images(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All four rotations of every image and their labels.

    Parameters
    ----------
    images
        ``[B, C, H, W]`` with ``H == W`` (a rotated square stays the same shape).

    Returns
    -------
    (rotated, labels)
        ``rotated[k * B + i]`` is image ``i`` rotated by ``k * 90`` degrees counter-clockwise
        (``torch.rot90`` in the image plane) and ``labels[k * B + i] = k``; shapes
        ``[4B, C, H, W]`` and int64 ``[4B]``.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be [B, C, H, W], got shape {tuple(images.shape)}")
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"images must be square to rotate by 90 degrees, got "
                         f"{images.shape[-2]}x{images.shape[-1]}")
    rotated = torch.cat([torch.rot90(images, k, dims=(-2, -1)) for k in range(ROTATIONS)])
    labels = torch.arange(ROTATIONS).repeat_interleave(images.shape[0])
    return rotated, labels


def rotation_batches(images: torch.Tensor, batch_size: int = 64,
                     seed: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless ``(rotated, labels)`` batches of ``batch_size`` from unlabelled ``images``.

    Each batch takes ``batch_size // 4`` images (a fresh seeded permutation per pass over the
    data) and all four rotations of each, so every batch holds the four labels equally often
    (Gidaris et al. found this better than one random rotation per image).

    Parameters
    ----------
    images
        ``[M, C, H, W]``, square.
    batch_size
        A multiple of 4, at most ``4 * M``.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be [M, C, H, W], got shape {tuple(images.shape)}")
    if batch_size % ROTATIONS or not 0 < batch_size <= ROTATIONS * images.shape[0]:
        raise ValueError(f"batch_size must be a positive multiple of {ROTATIONS} and at most "
                         f"{ROTATIONS * images.shape[0]} (4 x the number of images), "
                         f"got {batch_size}")
    per_batch = batch_size // ROTATIONS
    per_pass = images.shape[0] // per_batch
    epoch = 0
    while True:
        generator = torch.Generator().manual_seed(seed + epoch)
        order = torch.randperm(images.shape[0], generator=generator)
        for b in range(per_pass):
            yield rotate_images(images[order[b * per_batch:(b + 1) * per_batch]])
        epoch += 1
