"""Lake's 20 one-shot runs read from all_runs.zip."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from conftest import REPO

import mlbook
from mlbook.data import lake_runs
from mlbook.data.lake_runs import (
    BPL_ERROR,
    CONVNET_ERROR,
    HUMAN_ERROR,
    load_one_shot_runs,
    score_one_shot_runs,
)


@pytest.fixture(scope="module")
def runs105():
    root = os.path.join(os.environ.get("MLBOOK_DATA") or str(REPO.parent / "shared" / "data"),
                        "omniglot")
    if not os.path.isfile(os.path.join(root, "all_runs.zip")):
        pytest.skip("real data not available: set MLBOOK_DATA to the shared data folder")
    return root, load_one_shot_runs(image_size=105, root=root)


def test_all_800_images_load_with_answers(runs105):
    root, _ = runs105
    runs = load_one_shot_runs(root=root)
    assert len(runs) == 20 and [r.name for r in runs][:2] == ["run01", "run02"]
    images = 0
    for run in runs:
        assert run.training.shape == run.test.shape == (20, 1, 28, 28)
        assert run.training.dtype == torch.float32
        assert run.answers.dtype == torch.int64 and run.answers.shape == (20,)
        assert run.answers.min() >= 0 and run.answers.max() <= 19
        assert sorted(run.answers.tolist()) == list(range(20))  # one test item per class
        for x in (run.training, run.test):
            assert 0.0 <= x.min() and x.max() <= 1.0 and x.mean() < 0.15  # ink = 1, sparse
        images += 40
    assert images == 800
    # run01/test/item01.png shows the character of run01/training/class08.png
    assert runs[0].answers[0] == 7


def test_answers_match_characters_of_the_evaluation_set(runs105):
    """Each run image occurs in images_evaluation.npz; answers pair images of one character."""
    root, runs = runs105
    with np.load(f"{root}/images_evaluation.npz") as npz:
        raw = npz["images"]
    where = {np.packbits(raw[c, d]).tobytes(): (c, d) for c in range(raw.shape[0])
             for d in range(raw.shape[1])}
    for run in runs:
        def locate(x):
            return where[np.packbits(x[0].numpy() < 0.5).tobytes()]  # back to True=background
        train = [locate(x) for x in run.training]
        for item, x in enumerate(run.test):
            char, drawer = locate(x)
            answer_char, answer_drawer = train[run.answers[item]]
            assert char == answer_char and drawer != answer_drawer


def test_score_one_shot_runs(runs105):
    _, runs = runs105
    oracle = {id(r.test): r.answers for r in runs}
    assert score_one_shot_runs(lambda tr, te: oracle[id(te)], runs) == 0.0
    assert score_one_shot_runs(lambda tr, te: (oracle[id(te)] + 1) % 20, runs) == 1.0
    first_half = score_one_shot_runs(
        lambda tr, te: torch.where(torch.arange(20) < 10, oracle[id(te)], -1), runs)
    assert first_half == 0.5
    with pytest.raises(ValueError, match="integer indices of shape"):
        score_one_shot_runs(lambda tr, te: torch.zeros(20, 20), runs)
    with pytest.raises(ValueError, match="empty"):
        score_one_shot_runs(lambda tr, te: None, [])


def test_published_error_rates():
    assert BPL_ERROR < HUMAN_ERROR < CONVNET_ERROR
    assert (HUMAN_ERROR, BPL_ERROR, CONVNET_ERROR) == (0.045, 0.033, 0.135)


def test_missing_and_corrupted_zip(tmp_path, runs105):
    # download=False: the default downloads when MLBOOK_DATA is unset, and tests stay offline.
    with pytest.raises(mlbook.DataNotFoundError, match="all_runs.zip"):
        load_one_shot_runs(root=tmp_path, download=False)
    root, _ = runs105
    copy = tmp_path / "all_runs.zip"
    shutil.copyfile(f"{root}/all_runs.zip", copy)
    copy.chmod(0o644)
    with open(copy, "ab") as f:
        f.write(b"x")
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_one_shot_runs(root=tmp_path)


def test_download_is_checked(tmp_path, isolated_cache, runs105, monkeypatch):
    """download=True without the network: stand-in downloads, one corrupted, one good."""
    root, _ = runs105
    payloads = [b"not a zip", open(f"{root}/all_runs.zip", "rb").read()]
    fetched = []

    def fake_download(url, path, sha256=None):
        assert sha256 == lake_runs.ALL_RUNS_SHA256  # torch.hub checks the bytes too
        fetched.append(url)
        path.write_bytes(payloads[len(fetched) - 1])
        return path

    monkeypatch.setattr(lake_runs._io, "download", fake_download)
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_one_shot_runs(root=tmp_path, download=True)
    assert not (isolated_cache / "omniglot" / "all_runs.zip").exists()  # bad copy removed
    runs = load_one_shot_runs(root=tmp_path, download=True)
    assert len(runs) == 20 and fetched == [lake_runs.RUNS_URL] * 2
    assert lake_runs._runs_zip(tmp_path, download=True, verify=True).is_file()
    assert len(fetched) == 2  # kept in the cache, not fetched again
