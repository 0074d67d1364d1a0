"""Bad input gets a clear error, raised early, and leaves nothing half-written on disk.

One place for the mistakes a student makes first with the transfer-learning side of mlbook:
episodes of the wrong shape or dtype, labels out of range, more ways or shots than the data
hold, training that diverges, checkpoints that are not checkpoints, unknown model names and
budgets or learning rates that are not positive.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mlbook.checkpoint import load_checkpoint, save_checkpoint
from mlbook.data import EpisodeSampler, fixed_episodes, sample_episodes
from mlbook.models import Conv4, pretrained_backbone, torchvision_model
from mlbook.transfer import finetune_on_support, fit, linear_probe, probe_accuracies


def episode(t: int = 2, n: int = 3, k: int = 1, q: int = 2):
    """A well-formed Episode-like tuple: ``n`` classes, ``k`` shots, ``q`` queries per class."""
    sy = torch.arange(n).repeat_interleave(k).repeat(t, 1)
    qy = torch.arange(n).repeat_interleave(q).repeat(t, 1)
    return torch.rand(t, n * k, 1, 16, 16), sy, torch.rand(t, n * q, 1, 16, 16), qy


def backbone() -> nn.Module:
    return Conv4(in_channels=1, hidden=4, image_size=16)


# --------------------------------------------------------------------- few-shot episodes
def with_part(index: int, value):
    parts = list(episode())
    parts[index] = value
    return tuple(parts)


@pytest.mark.parametrize(
    "episodes, match",
    [
        (torch.rand(2, 3, 1, 16, 16), r"episodes must hold support_x \[T, N\*K, C, H, W\]"),
        (episode()[:3], "episodes must hold"),
        (with_part(0, torch.rand(3, 1, 16, 16)), r"got shapes \(3, 1, 16, 16\)"),
        (with_part(1, torch.zeros(2, 4, dtype=torch.long)), "the counts disagree"),
        (with_part(2, torch.rand(2, 6, 1, 8, 8)), "support and query images differ in shape"),
        (with_part(0, torch.zeros(2, 3, 1, 16, 16, dtype=torch.uint8)), "floating point"),
        (with_part(1, torch.arange(3.0).repeat(2, 1)), r"integer class labels.*\.long\(\)"),
        (with_part(3, torch.tensor([[0, 0, 1, 1, 2, 5]] * 2)),
         r"query labels of episode 0 must lie in 0\.\.2.*found 0\.\.5"),
        (with_part(1, torch.tensor([[0, 2, 3]] * 2)),
         r"support labels of episode 0 must be exactly 0\.\.3.*found \[0, 2, 3\]"),
        (with_part(3, torch.tensor([[0, 0, 1, 1, 2, -1]] * 2)), "query labels of episode 0"),
    ],
    ids=["one-tensor", "three-parts", "support-4d", "counts", "image-sizes", "uint8-images",
         "float-labels", "query-label-5", "support-gap", "negative-label"],
)
def test_probe_refuses_malformed_episodes(episodes, match):
    calls = []
    net = backbone()
    net.register_forward_hook(lambda *args: calls.append(1))
    with pytest.raises(ValueError, match=match):
        probe_accuracies(net, episodes)
    assert not calls  # refused before any image went through the backbone


def test_finetune_on_support_checks_steps_lr_and_labels():
    sx, sy, _, _ = episode(t=1)
    net = Conv4(in_channels=1, hidden=4, num_classes=5, image_size=16)
    with pytest.raises(ValueError, match=r"lr must be > 0, got 0"):
        finetune_on_support(net, sx[0], sy[0], 3, lr=0.0)
    with pytest.raises(ValueError, match=r"lr must be > 0, got -0.001"):
        finetune_on_support(net, sx[0], sy[0], 3, lr=-1e-3)
    with pytest.raises(ValueError, match=r"steps must be an int >= 0"):
        finetune_on_support(net, sx[0], sy[0], 3, steps=-1)
    with pytest.raises(ValueError, match=r"support labels must be exactly 0\.\.3"):
        finetune_on_support(net, sx[0], sy[0], 4)  # 4 ways but only 3 classes have examples
    with pytest.raises(ValueError, match=r"need support_x \[N\*K, C, H, W\]"):
        finetune_on_support(net, sx[0], sy[0][:2], 3)


# ------------------------------------------------------------------ drawing episodes
@pytest.mark.parametrize("make", [sample_episodes, fixed_episodes, EpisodeSampler])
def test_more_ways_or_shots_than_the_data_hold(make):
    images = torch.rand(4, 6, 1, 8, 8)  # 4 classes, 6 drawings each
    with pytest.raises(ValueError, match="n_way=5 is more ways than the 4 classes"):
        make(images, 5, 1, 1, 2)
    with pytest.raises(ValueError, match=r"k_shot \+ q_queries = 2 \+ 5 = 7 exceeds the 6"):
        make(images, 3, 2, 5, 2)


# ------------------------------------------------------------------------- training
def batches(n: int = 6, nan_at: int | None = None):
    """``n`` fixed batches for a 6 -> 2 classifier; batch ``nan_at`` (0-based) holds a NaN."""
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        x = torch.randn(8, 6, generator=g)
        if i == nan_at:
            x[0, 0] = float("nan")
        out.append((x, (x[:, 0] > 0).long()))
    return out


def model_and_opt(lr: float = 1e-2):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    opt.param_groups[0]["lr"] = lr  # SGD itself refuses lr < 0, a hand-edited group does not
    return model, opt


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    path = tmp_path / "run" / "ckpt.pt"
    model, opt = model_and_opt()
    with pytest.raises(FloatingPointError, match=r"the loss is nan at step 5.*last checkpoint"):
        fit(model, batches(nan_at=4), opt, steps=6, checkpoint=path, checkpoint_every=2)
    state = load_checkpoint(path)
    assert state["step"] == 4  # written at step 4, untouched by the failure
    for name, value in model.state_dict().items():  # step 5 did not change the model
        assert torch.equal(value, state["model"][name]) and torch.isfinite(value).all()
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]  # nothing half-written


def test_nan_loss_at_the_first_step_writes_nothing(tmp_path):
    model, opt = model_and_opt()
    with pytest.raises(FloatingPointError, match="no checkpoint was written"):
        fit(model, batches(nan_at=0), opt, steps=3, checkpoint=tmp_path / "c.pt")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "lr, budget, match",
    [
        (0.0, {"steps": 3}, r"learning rates must be > 0, got \[0.0\]"),
        (-0.1, {"steps": 3}, r"learning rates must be > 0, got \[-0.1\]"),
        (0.1, {"epochs": 0}, "epochs must be a positive int, got 0"),
        (0.1, {"epochs": -2}, "epochs must be a positive int, got -2"),
        (0.1, {"steps": -5}, "steps must be a positive int, got -5"),
        (0.1, {"steps": 2.5}, "steps must be a positive int, got 2.5"),
        (0.1, {"steps": 3, "log_every": 0}, "log_every must be a positive int"),
    ],
)
def test_fit_refuses_bad_rates_and_budgets_before_writing(tmp_path, lr, budget, match):
    model, opt = model_and_opt(lr)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        fit(model, batches(), opt, checkpoint=tmp_path / "sub" / "c.pt", **budget)
    assert list(tmp_path.iterdir()) == []
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ---------------------------------------------------------------------- checkpoints
def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = save_checkpoint({"step": 1, "w": torch.randn(100)}, tmp_path / "c.pt")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"cannot load the checkpoint .*c\.pt.*truncated"):
        load_checkpoint(path)


class Gadget:
    """Any class: unpickling it could run code, so it is refused."""


def test_checkpoint_with_arbitrary_objects_is_refused(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"model": Gadget()}, path)
    with pytest.raises(ValueError, match="weights_only=True.*arbitrary Python objects"):
        load_checkpoint(path)


def test_foreign_checkpoint_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"epoch": 3, "weights": torch.zeros(2)}, path)  # another program's file
    content = path.read_bytes()
    model, opt = model_and_opt()
    with pytest.raises(ValueError, match=r"expected a dict with the keys \['history', "
                                         r"'model', 'optimizer', 'step'\], found \['epoch'"):
        fit(model, batches(), opt, steps=2, checkpoint=path)
    assert path.read_bytes() == content
    torch.save([1, 2, 3], path)
    with pytest.raises(ValueError, match="found list"):
        load_checkpoint(path)


# --------------------------------------------------------------------------- models
def test_unknown_pretrained_names_suggest_close_ones():
    with pytest.raises(ValueError, match=r"unknown model 'resnet81'.*Did you mean.*resnet18"):
        pretrained_backbone("resnet81")
    with pytest.raises(ValueError, match=r"'resnet18' has no weights 'IMAGENET'"):
        torchvision_model("resnet18", weights="IMAGENET")


def test_linear_probe_rejects_non_positive_regularisation():
    with pytest.raises(ValueError, match="C must be > 0"):
        linear_probe(C=-1.0)
