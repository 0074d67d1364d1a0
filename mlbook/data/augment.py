"""Small random affine distortions of character images (Lake et al. 2015; Koch et al. 2015).

Omniglot characters stay the same character under a small rotation, shear, scaling or shift,
so a few-shot learner trained on distorted copies sees more variety than the 20 drawings per
character give. Koch et al.'s Siamese networks drew, per image, a rotation in [-10, 10]
degrees, a shear in [-0.3, 0.3], a scale in [0.8, 1.2] and a translation in [-2, 2] pixels
(of 105); these are the defaults here, the translation given as a fraction of the side.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from mlbook.data.episodes import Episode


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def random_affine(images: torch.Tensor, generator: torch.Generator | None = None,
                  rotation_deg: float = 10.0, shear: float = 0.3,
                  scale: tuple[float, float] = (0.8, 1.2),
                  translate: float = 0.02) -> torch.Tensor:
    """Each image of ``images [..., C, H, W]`` under its own random affine map.

    Parameters
    ----------
    images
        Ink-on-zero images (the value outside the image is 0, background).
    generator
        A CPU ``torch.Generator`` for reproducible draws.
    rotation_deg, shear, scale, translate
        Ranges: rotation uniform in ``[-rotation_deg, rotation_deg]`` degrees, shear uniform in
        ``[-shear, shear]`` (x and y independently), scale uniform in ``scale`` (x and y
        independently), translation uniform in ``[-translate, translate]`` of the image side.

    Returns
    -------
    Tensor
        Same shape and dtype as ``images`` (bilinear resampling).
    """
    if images.ndim < 3:
        raise ValueError(f"images must be [..., C, H, W], got shape {tuple(images.shape)}")
    low, high = scale
    if not (0 < low <= high) or rotation_deg < 0 or shear < 0 or translate < 0:
        raise ValueError(
            "ranges must be non-negative with 0 < scale[0] <= scale[1], got "
            f"rotation_deg={rotation_deg}, shear={shear}, scale={scale}, translate={translate}"
        )
    flat = images.reshape(-1, *images.shape[-3:])
    n = flat.shape[0]
    angle = _uniform(n, -rotation_deg, rotation_deg, generator) * math.pi / 180
    sh_x, sh_y = _uniform(n, -shear, shear, generator), _uniform(n, -shear, shear, generator)
    sc_x, sc_y = _uniform(n, low, high, generator), _uniform(n, low, high, generator)
    # affine_grid works in [-1, 1] coordinates, so a shift of t of the side is 2 t.
    t_x = _uniform(n, -translate, translate, generator) * 2
    t_y = _uniform(n, -translate, translate, generator) * 2
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    shearing = torch.stack([torch.stack([torch.ones(n), sh_x], -1),
                            torch.stack([sh_y, torch.ones(n)], -1)], -2)
    scaling = torch.diag_embed(torch.stack([sc_x, sc_y], -1))
    # The grid maps output to input coordinates: invert the forward map A x + t.
    forward = rotation @ shearing @ scaling
    inverse = torch.linalg.inv(forward)
    shift = -(inverse @ torch.stack([t_x, t_y], -1).unsqueeze(-1))
    theta = torch.cat([inverse, shift], -1).to(flat.dtype).to(flat.device)
    grid = F.affine_grid(theta, list(flat.shape), align_corners=False)
    out = F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(images.shape)


class AugmentedEpisodes:
    """An episode stream whose support and query images are distorted by :func:`random_affine`.

    ``AugmentedEpisodes(EpisodeSampler(...))`` is itself an endless stream. The distortions are
    drawn from the wrapped sampler's ``generator``, so one seed fixes both the tasks and their
    distortions, and :func:`mlbook.meta.meta_train`, which checkpoints that generator, resumes
    the same stream.
    """

    def __init__(self, sampler: Iterator[Episode], **affine: float) -> None:
        generator = getattr(sampler, "generator", None)
        if not isinstance(generator, torch.Generator):
            raise TypeError("the sampler needs a torch.Generator at .generator, e.g. an "
                            "mlbook.data.EpisodeSampler")
        random_affine(torch.zeros(1, 1, 4, 4), None, **affine)  # check the ranges now
        self.sampler, self.affine = sampler, affine

    @property
    def generator(self) -> torch.Generator:
        """The wrapped sampler's generator (tasks and distortions are drawn from it)."""
        return self.sampler.generator

    def __iter__(self) -> AugmentedEpisodes:
        return self

    def __next__(self) -> Episode:
        episode = next(self.sampler)
        g = self.generator
        return Episode(random_affine(episode.support_x, g, **self.affine), episode.support_y,
                       random_affine(episode.query_x, g, **self.affine), episode.query_y)
