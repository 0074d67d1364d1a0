"""Backbones: the 4-block ConvNet and pretrained networks by name."""

from mlbook.models.conv4 import Conv4, conv_block
from mlbook.models.pretrained import (
    PooledFeatures,
    Pretrained,
    pretrained_backbone,
    split_stages,
)
from mlbook.models.torchvision_models import classification_models, torchvision_model

__all__ = [
    "Conv4",
    "PooledFeatures",
    "Pretrained",
    "classification_models",
    "conv_block",
    "pretrained_backbone",
    "split_stages",
    "torchvision_model",
]
