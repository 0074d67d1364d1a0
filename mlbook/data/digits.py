"""Handwritten digits bundled with scikit-learn: a small cross-domain target for Omniglot models.

1,797 images of 8x8 pixels with values 0..16 (UCI optical digits; ink is high, as in
mlbook's Omniglot convention). They are scaled to [0, 1] and upsampled bilinearly to
``S x S`` so that models built for 28x28 Omniglot take them unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NUM_IMAGES, NUM_CLASSES = 1797, 10


def digits_images(image_size: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    """All digits: images float32 ``[1797, 1, S, S]`` in [0, 1] (ink 1.0), labels int64 ``[1797]``.

    Bilinear upsampling (``align_corners=False``) interpolates between pixels, so values stay
    within [0, 1]; ``image_size=8`` returns the original pixels divided by 16.
    """
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise ValueError(f"image_size must be a positive int (e.g. 28), got {image_size!r}")
    # Imported here: sklearn.datasets pulls in SciPy, seconds that `import mlbook.data` need
    # not pay. The data ship with scikit-learn: no download.
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if image_size != images.shape[-1]:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear",
                               align_corners=False).clamp_(0.0, 1.0)  # rounding only
    return images, torch.as_tensor(bunch.target, dtype=torch.int64)


def digits_by_class(image_size: int = 28, per_class: int | None = None) -> torch.Tensor:
    """Digits as a per-class tensor ``[10, per_class, 1, S, S]`` for :func:`sample_episodes`.

    Classes have 174 to 183 examples; to make the tensor rectangular each class keeps its
    first ``per_class`` examples in data-set order, by default the smallest count, 174.

    Raises
    ------
    ValueError
        If ``per_class`` is not a positive int or exceeds the smallest class (174).
    """
    images, labels = digits_images(image_size)
    counts = torch.bincount(labels, minlength=NUM_CLASSES)
    smallest = int(counts.min())
    if per_class is None:
        per_class = smallest
    valid = isinstance(per_class, int) and not isinstance(per_class, bool)
    if not valid or not 0 < per_class <= smallest:
        raise ValueError(
            f"per_class must be an int in 1..{smallest} (the smallest digit class has "
            f"{smallest} examples), got {per_class!r}"
        )
    return torch.stack([images[labels == c][:per_class] for c in range(NUM_CLASSES)])
