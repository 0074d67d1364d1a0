"""LoRA and BitFit: identity at initialisation, which parameters train, merging, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mlbook.transfer import LoRA, add_lora, bitfit, count_parameters


def small_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False),  # depthwise: not wrapped
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))


def test_lora_starts_as_the_identity_update_and_only_lora_trains():
    torch.manual_seed(0)
    model = small_cnn().eval()
    x = torch.randn(2, 3, 6, 6)
    before = model(x)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters()}
    wrapped = add_lora(model, rank=2, alpha=4)
    assert wrapped == ["3", "9"]  # the 1x1 conv and the linear layer
    assert torch.equal(model(x), before)  # B = 0: exactly the frozen network
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["3.down.weight", "3.up.weight", "9.down.weight", "9.up.weight"]
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model.train()(x), torch.tensor([0, 1])).backward()
        opt.step()
    after = dict(model.named_parameters())
    for name, value in frozen.items():  # the pretrained weights never move
        new_name = name.replace("3.", "3.base.", 1) if name.startswith("3.") else name
        new_name = new_name.replace("9.", "9.base.", 1) if name.startswith("9.") else new_name
        assert torch.equal(after[new_name], value), name
    assert not torch.equal(model.eval()(x), before)  # ... while the output has adapted


def test_lora_forward_equals_the_merged_weight_in_float64():
    torch.manual_seed(0)
    for base, x in [(nn.Linear(6, 5).double(), torch.randn(3, 6).double()),
                    (nn.Conv2d(6, 5, 1, stride=2).double(), torch.randn(2, 6, 4, 4).double())]:
        lora = LoRA(base, rank=3, alpha=6).double()
        nn.init.normal_(lora.up.weight)
        delta = lora.delta_weight()
        assert delta.shape == (5, 6)
        assert torch.linalg.matrix_rank(delta) <= 3
        weight = base.weight + delta.view_as(base.weight)
        expected = (F.linear(x, weight, base.bias) if isinstance(base, nn.Linear)
                    else F.conv2d(x, weight, base.bias, stride=2))
        assert torch.allclose(lora(x), expected, atol=1e-12)
        assert count_parameters(lora) == 3 * (6 + 5)
        assert count_parameters(lora, trainable_only=False) == 3 * 11 + 30 + 5


@pytest.mark.parametrize("base", [nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 1, groups=2),
                                  nn.Conv2d(4, 4, 1, padding=1), nn.ReLU()])
def test_lora_rejects_layers_that_are_not_linear_maps(base):
    with pytest.raises(TypeError, match="LoRA wraps"):
        LoRA(base)


@pytest.mark.parametrize("rank", [0, -1, 2.0, 5])
def test_lora_rejects_bad_rank(rank):
    with pytest.raises(ValueError, match="rank"):
        LoRA(nn.Linear(4, 6), rank=rank)


def test_add_lora_include_filter_and_nothing_to_wrap():
    model = small_cnn()
    assert add_lora(model, rank=1, include=lambda name, m: isinstance(m, nn.Linear)) == ["9"]
    with pytest.raises(ValueError, match="no nn.Linear"):
        add_lora(nn.Sequential(nn.Conv2d(3, 3, 3), nn.ReLU()))


def test_bitfit_trains_only_biases_and_the_named_head():
    model = small_cnn()
    trainable = bitfit(model, also=["9"])
    assert trainable == ["1.bias", "4.bias", "9.weight", "9.bias"]
    assert [n for n, p in model.named_parameters() if p.requires_grad] == trainable
    assert count_parameters(model) == 8 + 16 + 16 * 4 + 4
    # a step changes the biases and the head only
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    F.cross_entropy(model(torch.randn(4, 3, 5, 5)), torch.tensor([0, 1, 2, 3])).backward()
    opt.step()
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]) == (name not in trainable), name


def test_bitfit_rejects_unknown_modules_and_models_without_biases():
    with pytest.raises(ValueError, match="no module named"):
        bitfit(small_cnn(), also=["head"])
    with pytest.raises(ValueError, match="no bias"):
        bitfit(nn.Linear(3, 2, bias=False))
