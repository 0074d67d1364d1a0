"""The 4-block ConvNet of Vinyals et al. (2016), used by MAML and Prototypical Networks.

Each block is ``conv 3x3 (64 filters) -> BatchNorm -> ReLU -> 2x2 max-pool``. On a
``1x28x28`` Omniglot image the four pools leave ``64x1x1``, so the embedding has 64
features; on ``3x84x84`` (miniImageNet) it has ``64x5x5 = 1600``.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_block(
    in_channels: int, out_channels: int, track_running_stats: bool = True
) -> nn.Sequential:
    """``conv3x3 -> BatchNorm2d -> ReLU -> MaxPool2d(2)``."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels, track_running_stats=track_running_stats),
        nn.ReLU(inplace=False),
        nn.MaxPool2d(2),
    )


class Conv4(nn.Module):
    """Four conv blocks, a flatten, and an optional linear head.

    Parameters
    ----------
    in_channels
        1 for Omniglot, 3 for photos.
    hidden
        Filters per block (64 in the papers).
    num_classes
        Size of the linear head; ``None`` gives a pure feature extractor whose
        :meth:`forward` returns the embedding.
    image_size
        Side of the (square) input, used to size the head: 28 gives 64 features.
    track_running_stats
        ``False`` makes BatchNorm always use the statistics of the batch it sees, as MAML
        does (Finn et al. 2017, transductive batch norm); ``True`` is ordinary training.

    Notes
    -----
    Shapes: input ``[B, in_channels, image_size, image_size]``, output ``[B, num_classes]``
    (or ``[B, feature_dim]`` without a head).
    """

    def __init__(
        self,
        in_channels: int = 1,
        hidden: int = 64,
        num_classes: int | None = None,
        image_size: int = 28,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_block(in_channels, hidden, track_running_stats),
            conv_block(hidden, hidden, track_running_stats),
            conv_block(hidden, hidden, track_running_stats),
            conv_block(hidden, hidden, track_running_stats),
            nn.Flatten(),
        )
        side = image_size
        for _ in range(4):
            side //= 2
        if side < 1:
            raise ValueError(
                f"image_size={image_size} is too small for four 2x2 pools (need >= 16)"
            )
        self.feature_dim = hidden * side * side
        self.head = nn.Linear(self.feature_dim, num_classes) if num_classes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
