import random

import numpy as np
import pytest
import torch

import mlbook
from mlbook._env import require_files
from mlbook.checkpoint import load_checkpoint, save_checkpoint


def test_device_default_is_the_best_available(monkeypatch):
    monkeypatch.delenv("MLBOOK_DEVICE", raising=False)
    dev = mlbook.device()
    if torch.cuda.is_available():
        expected = "cuda"
    elif torch.backends.mps.is_available():
        expected = "mps"
    else:
        expected = "cpu"
    assert dev.type == expected
    assert torch.zeros(1, device=dev).device.type == expected  # usable, not only named


def test_device_env_override(monkeypatch):
    monkeypatch.setenv("MLBOOK_DEVICE", "cpu")
    assert mlbook.device() == torch.device("cpu")
    assert mlbook.device("cpu") == torch.device("cpu")  # an explicit choice wins too


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_unavailable_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("MLBOOK_DEVICE", "cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        mlbook.device()


def test_seed_everything_repeats_all_generators():
    def draw():
        g = mlbook.seed_everything(123)
        legacy_numpy = np.random.rand()  # noqa: NPY002 - checks the global generator is seeded
        torch_global, torch_own = torch.rand(1).item(), torch.rand(1, generator=g).item()
        return random.random(), legacy_numpy, torch_global, torch_own

    assert draw() == draw()
    with pytest.raises(ValueError, match="non-negative int"):
        mlbook.seed_everything(-1)


def test_data_root_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("MLBOOK_DATA", str(tmp_path))
    assert mlbook.data_root() == tmp_path


def test_data_root_missing_folder_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MLBOOK_DATA", str(tmp_path / "nope"))
    with pytest.raises(mlbook.DataNotFoundError, match="MLBOOK_DATA"):
        mlbook.data_root()


def test_data_root_defaults_to_cache(monkeypatch, isolated_cache):
    monkeypatch.delenv("MLBOOK_DATA", raising=False)
    assert mlbook.data_root() == isolated_cache


def test_require_files_names_missing_files_and_variable(tmp_path):
    (tmp_path / "a.npz").write_bytes(b"x")
    with pytest.raises(mlbook.DataNotFoundError) as info:
        require_files(tmp_path, ["a.npz", "b.npz"])
    assert "b.npz" in str(info.value) and "a.npz" not in str(info.value)
    assert "MLBOOK_DATA" in str(info.value)


def test_checkpoint_round_trip(tmp_path):
    state = {"model": {"w": torch.randn(3, 2)}, "step": 7, "history": {"loss": [1.0, 0.5]}}
    path = save_checkpoint(state, tmp_path / "sub" / "ckpt.pt")
    back = load_checkpoint(path)
    assert torch.equal(back["model"]["w"], state["model"]["w"])
    assert back["step"] == 7 and back["history"] == {"loss": [1.0, 0.5]}


def test_failed_save_keeps_previous_checkpoint(tmp_path):
    path = save_checkpoint({"step": 1}, tmp_path / "ckpt.pt")

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint({"step": 2, "bad": Unpicklable()}, path)
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temp file left


class Payload:
    """An arbitrary class: unpickling it could run code, so weights_only must refuse it."""


def test_checkpoint_refuses_arbitrary_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"x": Payload()}, path)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported"):
        load_checkpoint(path)


def test_should_download_only_without_a_data_folder(monkeypatch):
    from mlbook._env import should_download

    monkeypatch.delenv("MLBOOK_DATA", raising=False)
    assert should_download(None) is True
    monkeypatch.setenv("MLBOOK_DATA", "/somewhere")
    assert should_download(None) is False
    assert should_download(True) is True and should_download(False) is False
