"""The small ResNet: shapes, the feature/head split, residual blocks, bad arguments."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mlbook.models import BasicBlock, ResNet, small_resnet


def test_shapes_on_characters_and_photos():
    net = small_resnet(1, num_classes=7, widths=(4, 8, 8, 16))
    assert net(torch.randn(3, 1, 28, 28)).shape == (3, 7)
    assert net.features(torch.randn(3, 1, 28, 28)).shape == (3, net.feature_dim) == (3, 16)
    photo = small_resnet(3, num_classes=2, widths=(4, 4, 8, 8), stem="photo")
    assert photo(torch.randn(2, 3, 96, 96)).shape == (2, 2)


def test_without_head_forward_returns_embedding():
    net = ResNet(1, None, widths=(4, 4, 4, 8))
    assert isinstance(net.head, nn.Identity)
    x = torch.randn(2, 1, 28, 28)
    net.eval()
    torch.testing.assert_close(net(x), net.features(x))


def test_basic_block_is_residual():
    # With the second BatchNorm's scale and shift at zero the residual branch vanishes, so an
    # identity-shortcut block computes relu(x) exactly.
    block = BasicBlock(4, 4).eval()
    nn.init.zeros_(block.bn2.weight)
    nn.init.zeros_(block.bn2.bias)
    x = torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(block(x), torch.relu(x))
    down = BasicBlock(4, 8, stride=2)
    assert down(x).shape == (2, 8, 3, 3)
    assert not isinstance(down.shortcut, nn.Identity)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_classes": 0}, "num_classes"),
        ({"widths": (8, 8, 8)}, "widths"),
        ({"stem": "big"}, "stem"),
        ({"in_channels": 0}, "in_channels"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ResNet(**{"in_channels": 1, **kwargs})
