"""torchvision models by name; pretrained weights read from a hub cache the test writes itself."""

from __future__ import annotations

import pytest
import torch
import torchvision

from mlbook import DataNotFoundError
from mlbook.models import classification_models, torchvision_model
from mlbook.models.torchvision_models import resolve_weights, weights_path


def test_random_init_with_num_classes():
    model = torchvision_model("squeezenet1_1", num_classes=4)
    assert "resnet18" in classification_models()
    model.eval()
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 4)


def test_unknown_name_lists_close_names():
    with pytest.raises(ValueError, match=r"unknown .* 'resnet19'.*resnet18"):
        torchvision_model("resnet19")


def test_weight_spellings():
    enum = torchvision.models.ResNet18_Weights
    assert resolve_weights("resnet18", "DEFAULT") is enum.IMAGENET1K_V1
    assert resolve_weights("resnet18", "IMAGENET1K_V1") is enum.IMAGENET1K_V1
    assert resolve_weights("resnet18", "ResNet18_Weights.IMAGENET1K_V1") is enum.IMAGENET1K_V1
    assert resolve_weights("resnet18", enum.IMAGENET1K_V1) is enum.IMAGENET1K_V1
    with pytest.raises(ValueError, match="no weights 'IMAGENET2K'"):
        resolve_weights("resnet18", "IMAGENET2K")
    with pytest.raises(ValueError, match="are not weights of"):
        resolve_weights("resnet34", enum.IMAGENET1K_V1)


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_bad_num_classes(bad):
    with pytest.raises(ValueError, match="num_classes"):
        torchvision_model("squeezenet1_1", num_classes=bad)


def test_weights_load_from_the_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    weights = torchvision.models.MobileNet_V3_Small_Weights.IMAGENET1K_V1
    path = weights_path(weights)
    assert path == tmp_path / "hub" / "checkpoints" / "mobilenet_v3_small-047dcff4.pth"
    reference = torchvision.models.mobilenet_v3_small()  # stands in for the real ImageNet weights
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)

    model = torchvision_model("mobilenet_v3_small", weights="DEFAULT")
    for a, b in zip(model.state_dict().values(), reference.state_dict().values(), strict=True):
        assert torch.equal(a, b)

    # A new head for 3 classes; the rest keeps the loaded weights.
    small = torchvision_model("mobilenet_v3_small", weights="IMAGENET1K_V1", num_classes=3)
    assert torch.equal(small.features[0][0].weight, reference.features[0][0].weight)
    assert small.classifier[3].out_features == 3
    small.eval()
    assert small(torch.randn(1, 3, 64, 64)).shape == (1, 3)


def test_missing_weights_offline_say_which_file_goes_where(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    expected = str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    with pytest.raises(DataNotFoundError, match="resnet18-f37072fd.pth") as err:
        torchvision_model("resnet18", weights="IMAGENET1K_V1", download=False)
    assert expected in str(err.value)
    # With download allowed the (blocked) network fails and the same advice comes back.
    with pytest.raises(DataNotFoundError, match="Download failed") as err:
        torchvision_model("resnet18", weights="IMAGENET1K_V1")
    assert expected in str(err.value)
    assert not (tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth").exists()


def test_download_is_checked_against_the_hash_in_the_file_name(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix))
        raise OSError("no network in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    with pytest.raises(DataNotFoundError, match="Download failed"):
        torchvision_model("resnet18", weights="IMAGENET1K_V1")
    assert calls == [("https://download.pytorch.org/models/resnet18-f37072fd.pth", "f37072fd")]


@pytest.mark.parametrize("name", ["googlenet", "resnet18"])
def test_weights_build_the_model_torchvision_builds(tmp_path, monkeypatch, name):
    """Same state and same forward as torchvision's own builder reading the same file.

    GoogLeNet is the hard case: its builder switches ``transform_input`` on and drops the
    auxiliary heads, which no state dict records.
    """
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    weights = torchvision.models.get_model_weights(name).DEFAULT
    path = weights_path(weights)
    path.parent.mkdir(parents=True)
    torch.manual_seed(1)
    stand_in = torchvision.models.get_model(name, num_classes=1000, aux_logits=True,
                                            init_weights=False) if name == "googlenet" \
        else torchvision.models.get_model(name)
    torch.save(stand_in.state_dict(), path)

    ours = torchvision_model(name, weights="DEFAULT").eval()
    theirs = torchvision.models.get_model(name, weights=weights).eval()  # reads the same file
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(),
                                                 theirs.state_dict().values(), strict=True))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)
    if name == "googlenet":
        assert ours.transform_input and ours.aux1 is None


def test_foreign_weights_file_fails_loudly(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    path = weights_path(torchvision.models.ResNet18_Weights.IMAGENET1K_V1)
    path.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet34().state_dict(), path)  # another network's weights
    with pytest.raises(RuntimeError, match="state_dict"):
        torchvision_model("resnet18", weights="DEFAULT")
