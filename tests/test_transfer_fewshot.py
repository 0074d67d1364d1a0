"""Few-shot evaluation of transfer baselines: probes on frozen features, per-episode fine-tuning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mlbook.loops import mean_confidence_interval
from mlbook.models import Conv4
from mlbook.transfer.fewshot import (
    evaluate_episodes_with_finetuning,
    evaluate_episodes_with_probe,
    finetune_accuracies,
    finetune_on_support,
    probe_accuracies,
)


def easy_episodes(t: int = 4, n: int = 3, k: int = 2, q: int = 3):
    """Class c is a constant image of brightness c (plus noise): trivially separable."""
    g = torch.Generator().manual_seed(0)

    def make(per):
        y = torch.arange(n).repeat_interleave(per).repeat(t, 1)
        x = y[..., None, None, None].float() + 0.05 * torch.randn(
            t, n * per, 1, 16, 16, generator=g
        )
        return x, y

    sx, sy = make(k)
    qx, qy = make(q)
    return sx, sy, qx, qy


class MeanPixel(nn.Module):
    """A backbone whose features are (mean pixel, 1); counts its forward calls."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.calls = 0
        self.images = 0

    def forward(self, x):
        self.calls += 1
        self.images += x.shape[0]
        m = self.scale * x.mean(dim=(1, 2, 3))
        return torch.stack([m, torch.ones_like(m)], 1)


@pytest.mark.parametrize("classifier", ["logistic", "centroid"])
def test_probe_embeds_every_image_once_and_separates_easy_classes(classifier):
    backbone = MeanPixel()
    episodes = easy_episodes()
    accs = probe_accuracies(backbone, episodes, classifier, batch_size=1000)
    assert backbone.calls == 1 and backbone.images == 4 * (6 + 9)
    assert accs.shape == (4,) and accs.min() == 1.0
    mean, ci = evaluate_episodes_with_probe(MeanPixel(), episodes, classifier)
    assert mean == 1.0 and ci == 0.0


def test_finetune_leaves_backbone_untouched_and_learns_support():
    torch.manual_seed(0)
    backbone = Conv4(in_channels=1, hidden=4, num_classes=10, image_size=16)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    sx, sy, qx, qy = easy_episodes(t=1)
    start = finetune_on_support(backbone, sx[0], sy[0], 3, steps=0)
    net = finetune_on_support(backbone, sx[0], sy[0], 3, steps=15, lr=5e-2, decay=0.8, lam=0.1)
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())
    assert net.head.out_features == 3 and not net.training
    with torch.no_grad():
        loss_start = nn.functional.cross_entropy(start(sx[0]), sy[0])
        loss_end = nn.functional.cross_entropy(net(sx[0]), sy[0])
    assert loss_end < 0.5 * loss_start


def test_prototype_head_without_steps_is_nearest_centroid():
    backbone = Conv4(in_channels=1, hidden=4, num_classes=10, image_size=16)
    sx, sy, qx, qy = easy_episodes(t=1)
    net = finetune_on_support(backbone, sx[0], sy[0], 3, steps=0)
    with torch.no_grad():
        feats_s, feats_q = net.features(sx[0]), net.features(qx[0])
    protos = torch.stack([feats_s[sy[0] == c].mean(0) for c in range(3)])
    nearest = torch.cdist(feats_q, protos).argmin(1)
    with torch.no_grad():
        assert torch.equal(net(qx[0]).argmax(1), nearest)


def test_finetune_evaluations_agree_with_the_probe_and_with_their_scores():
    backbone = Conv4(in_channels=1, hidden=4, num_classes=10, image_size=16)
    episodes = easy_episodes(t=3)
    # Zero steps from the prototype head is the nearest-centroid probe on the same features.
    accs = finetune_accuracies(backbone, episodes, steps=0)
    np.testing.assert_array_equal(accs, probe_accuracies(backbone.features, episodes, "centroid"))
    assert accs.dtype == np.float64 and np.all(np.isclose(accs * 9, np.round(accs * 9)))

    torch.manual_seed(1)
    mean, ci = evaluate_episodes_with_finetuning(
        backbone, episodes, steps=2, from_scratch=True, batchnorm="train", head_init="random"
    )
    torch.manual_seed(1)
    again = finetune_accuracies(
        backbone, episodes, steps=2, from_scratch=True, batchnorm="train", head_init="random"
    )
    assert (mean, ci) == mean_confidence_interval(again)
    assert isinstance(mean, float) and isinstance(ci, float)


def test_bad_options():
    backbone = Conv4(in_channels=1, hidden=4, num_classes=10, image_size=16)
    sx, sy, qx, qy = easy_episodes(t=1)
    with pytest.raises(ValueError, match="classifier must be one of"):
        probe_accuracies(MeanPixel(), (sx, sy, qx, qy), "svm")
    with pytest.raises(ValueError, match="batchnorm"):
        finetune_on_support(backbone, sx[0], sy[0], 3, batchnorm="adaptive")
    with pytest.raises(ValueError, match=r"lam .* must lie in \[0, 1\]"):
        finetune_on_support(backbone, sx[0], sy[0], 3, steps=1, lam=2.0)
    with pytest.raises(ValueError, match="support_x"):
        probe_accuracies(MeanPixel(), (sx[0], sy, qx, qy))
