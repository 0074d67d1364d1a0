"""Backbones: the 4-block ConvNet, a small ResNet and pretrained networks by name."""

from mlbook.models.conv4 import Conv4, conv_block

__all__ = ["Conv4", "conv_block"]
