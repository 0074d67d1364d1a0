"""A small ResNet (He et al. 2016) for 28x28 characters and for photos.

Four stages of two BasicBlocks each (``conv3x3 -> BN -> ReLU -> conv3x3 -> BN``, plus the
identity or a strided 1x1 projection, then ReLU). The first stage keeps the resolution, the
other three halve it, and a global average pool turns the last feature map into a vector of
``widths[-1]`` features whatever the input size. The stem is a single 3x3 convolution for
small images (28x28 Omniglot, 32x32) and the ImageNet-style 7x7/2 convolution with a 3x3/2
max-pool for photos (``stem="photo"``), so a 224x224 photo reaches the first stage at 56x56.

Like :class:`mlbook.models.Conv4`, the network is ``features`` (an ``nn.Sequential`` whose
children are the stem, the four stages and the pool + flatten) followed by ``head``, so
``mlbook.transfer`` can freeze, unfreeze and give learning rates block by block.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection.

    Maps ``[B, in_channels, H, W]`` to ``[B, out_channels, ceil(H / stride), ceil(W / stride)]``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        # A projection only where the shapes differ; elsewhere the shortcut is the identity.
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """Stem, four stages of BasicBlocks, global average pool and an optional linear head.

    Parameters
    ----------
    in_channels
        1 for Omniglot and digits, 3 for photos.
    num_classes
        Size of the linear head; ``None`` gives a feature extractor whose :meth:`forward`
        returns the ``[B, feature_dim]`` embedding.
    widths
        Channels of the four stages; ``feature_dim = widths[-1]``.
    blocks_per_stage
        BasicBlocks per stage (2 gives a ResNet-10 shape: 1 + 4 * 2 * 2 + 1 layers).
    stem
        ``"small"`` (3x3 conv, stride 1: for 28x28 or 32x32 inputs) or ``"photo"``
        (7x7/2 conv and 3x3/2 max-pool, as in torchvision's ResNets: for 84x84 and larger).

    Notes
    -----
    Input ``[B, in_channels, H, W]`` (any ``H, W >= 8`` for the small stem), output
    ``[B, num_classes]`` or ``[B, feature_dim]`` without a head.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int | None = None,
        widths: Sequence[int] = (32, 64, 128, 256),
        blocks_per_stage: int = 2,
        stem: str = "small",
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) != 4 or min(widths) < 1:
            raise ValueError(f"widths must be 4 positive channel counts, got {widths}")
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if blocks_per_stage < 1:
            raise ValueError(f"blocks_per_stage must be >= 1, got {blocks_per_stage}")
        if num_classes is not None and num_classes < 1:
            raise ValueError(
                f"num_classes must be >= 1 (or None for a feature extractor), got {num_classes}"
            )
        if stem == "small":
            stem_layers = nn.Sequential(
                nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
                nn.BatchNorm2d(widths[0]),
                nn.ReLU(),
            )
        elif stem == "photo":
            stem_layers = nn.Sequential(
                nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(widths[0]),
                nn.ReLU(),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
        else:
            raise ValueError(f"stem must be 'small' or 'photo', got {stem!r}")

        stages: list[nn.Module] = []
        channels = widths[0]
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            blocks = [BasicBlock(channels, width, stride)]
            blocks += [BasicBlock(width, width) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
            channels = width
        self.features = nn.Sequential(
            stem_layers, *stages, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        )
        self.feature_dim = widths[-1]
        self.head: nn.Module = (
            nn.Linear(self.feature_dim, num_classes) if num_classes else nn.Identity()
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def small_resnet(
    in_channels: int = 1,
    num_classes: int | None = None,
    widths: Sequence[int] = (32, 64, 128, 256),
    stem: str = "small",
) -> ResNet:
    """A ResNet-10-shaped network (2 BasicBlocks per stage); see :class:`ResNet`."""
    return ResNet(in_channels, num_classes, widths, blocks_per_stage=2, stem=stem)
