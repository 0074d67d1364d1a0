"""Fine-tuning tools: a new head, freezing, partial unfreezing, layer-wise learning rates."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mlbook.models import Conv4, torchvision_model
from mlbook.transfer import (
    batchnorm_eval,
    blocks,
    freeze,
    layerwise_param_groups,
    replace_head,
    trainable_parameters,
    unfreeze_last,
)


def tiny() -> Conv4:
    return Conv4(in_channels=1, hidden=4, num_classes=3, image_size=16)


def take_steps(model: nn.Module, n: int = 3) -> None:
    opt = torch.optim.SGD(trainable_parameters(model), lr=0.5)
    x, y = torch.randn(8, 1, 16, 16), torch.randint(0, 3, (8,))
    for _ in range(n):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_blocks_of_conv4_and_torchvision_resnet():
    assert [n for n, _ in blocks(tiny())] == [f"features.{i}" for i in range(4)] + ["head"]
    names = [n for n, _ in blocks(torchvision_model("resnet18", num_classes=2))]
    assert names == ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"]


def test_replace_head_sizes_and_keeps_backbone():
    model = tiny()
    before = snapshot(model)
    head = replace_head(model, 11)
    assert model.head is head and head.out_features == 11 and head.in_features == model.feature_dim
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 11)
    after = snapshot(model)
    for name in before:
        if not name.startswith("head."):
            assert torch.equal(before[name], after[name])


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_replace_head_rejects_bad_num_classes(bad):
    with pytest.raises(ValueError, match="num_classes"):
        replace_head(tiny(), bad)


def test_frozen_parameters_do_not_change_and_unfrozen_do():
    model = tiny()
    frozen = freeze(model, keep_trainable=["features.3", "head"])
    assert frozen and all(n.startswith(("features.0", "features.1", "features.2")) for n in frozen)
    before = snapshot(model)
    take_steps(model)
    after = snapshot(model)
    for name in before:
        changed = not torch.equal(before[name], after[name])
        assert changed == (name not in frozen), name


def test_unfreeze_last_counts_blocks_from_the_output():
    model = tiny()
    assert unfreeze_last(model, 1) == ["head"]
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        "head.weight",
        "head.bias",
    ]
    before = snapshot(model)
    take_steps(model)
    after = snapshot(model)
    assert all(torch.equal(before[n], after[n]) for n in before if not n.startswith("head."))
    assert not torch.equal(before["head.weight"], after["head.weight"])
    assert unfreeze_last(model, 5) == [n for n, _ in blocks(model)]
    assert all(p.requires_grad for p in model.parameters())
    assert unfreeze_last(model, 0) == [] and not trainable_parameters(model)


def test_freeze_errors_name_the_missing_layer():
    with pytest.raises(ValueError, match=r"no layer named 'haed'.*'head'"):
        freeze(tiny(), keep_trainable=["haed"])
    with pytest.raises(ValueError, match=r"n_blocks must be an int in \[0, 5\]"):
        unfreeze_last(tiny(), 6)


def test_batchnorm_eval_stops_running_stats_of_frozen_layers():
    model = tiny()
    unfreeze_last(model, 2)  # features.3 and the head stay trainable
    model.train()
    assert batchnorm_eval(model) == 3
    bn0, bn3 = model.features[0][1], model.features[3][1]
    mean0, mean3 = bn0.running_mean.clone(), bn3.running_mean.clone()
    model(torch.randn(4, 1, 16, 16) + 3)
    assert torch.equal(bn0.running_mean, mean0) and not torch.equal(bn3.running_mean, mean3)


def test_layerwise_learning_rates_land_in_the_right_groups():
    model = tiny()
    groups = layerwise_param_groups(model, base_lr=1.0, decay=0.5, weight_decay=0.0)
    names = [g["name"] for g in groups]
    assert names == ["features.0", "features.1", "features.2", "features.3", "head"]
    assert [g["lr"] for g in groups] == [0.0625, 0.125, 0.25, 0.5, 1.0]
    for g in groups:
        module = model.get_submodule(g["name"])
        assert {id(p) for p in g["params"]} == {id(p) for p in module.parameters()}
        assert g["weight_decay"] == 0.0
    opt = torch.optim.SGD(groups, lr=123.0)  # the per-group lr wins over the default
    assert [g["lr"] for g in opt.param_groups] == [0.0625, 0.125, 0.25, 0.5, 1.0]


def test_layerwise_explicit_rates_and_frozen_blocks():
    model = tiny()
    unfreeze_last(model, 2)
    groups = layerwise_param_groups(model, base_lr=0.1, lrs={"features.3": 0.01})
    assert [(g["name"], g["lr"]) for g in groups] == [("features.3", 0.01), ("head", 0.1)]
    unfreeze_last(model, 5)
    groups = layerwise_param_groups(model, 0.1, lrs=[1, 2, 3, 4, 5])
    assert [g["lr"] for g in groups] == [1.0, 2.0, 3.0, 4.0, 5.0]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"base_lr": 0.0}, "base_lr"),
        ({"base_lr": 0.1, "decay": 1.5}, "decay"),
        ({"base_lr": 0.1, "lrs": [0.1, 0.1]}, "5 blocks"),
        ({"base_lr": 0.1, "lrs": {"nope": 0.1}}, "unknown blocks"),
        ({"base_lr": 0.1, "decay": 0.5, "lrs": [1] * 5}, "either"),
    ],
)
def test_layerwise_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        layerwise_param_groups(tiny(), **kwargs)
