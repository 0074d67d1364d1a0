"""Backbones: the 4-block ConvNet, a small ResNet and pretrained networks by name."""

from mlbook.models.conv4 import Conv4, conv_block
from mlbook.models.pretrained import (
    PooledFeatures,
    Pretrained,
    pretrained_backbone,
    split_stages,
)
from mlbook.models.resnet import BasicBlock, ResNet, small_resnet
from mlbook.models.torchvision_models import classification_models, torchvision_model

__all__ = [
    "BasicBlock",
    "Conv4",
    "PooledFeatures",
    "Pretrained",
    "ResNet",
    "classification_models",
    "conv_block",
    "pretrained_backbone",
    "small_resnet",
    "split_stages",
    "torchvision_model",
]
