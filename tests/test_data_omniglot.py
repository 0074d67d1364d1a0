"""Omniglot loading, caching, alphabets and the standard (MAML/ProtoNets) split."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from conftest import REPO

import mlbook
from mlbook.data import lake_split, load_omniglot, omniglot_standard_split, standard_split_ids
from mlbook.data._omniglot_format import alphabet_table, ink_from_raw
from mlbook.data.omniglot import CACHE_FORMAT, NPZ_SHA256, rotate_classes

DATA = os.environ.get("MLBOOK_DATA") or str(REPO.parent / "shared" / "data")


@pytest.fixture(scope="module")
def omniglot_env(tmp_path_factory):
    """Real data + one module-wide cache, so the 32,460 images are resized only once."""
    if not os.path.isdir(os.path.join(DATA, "omniglot")):
        pytest.skip("real data not available: set MLBOOK_DATA to the shared data folder")
    saved = {k: os.environ.get(k) for k in ("MLBOOK_DATA", "MLBOOK_CACHE")}
    os.environ["MLBOOK_DATA"] = DATA
    os.environ["MLBOOK_CACHE"] = str(tmp_path_factory.mktemp("omniglot-cache"))
    yield os.environ["MLBOOK_CACHE"]
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def splits(omniglot_env):
    return load_omniglot("background"), load_omniglot("evaluation")


def test_counts_shapes_and_ink_convention(splits):
    bg, ev = splits
    assert bg.images.shape == (964, 20, 1, 28, 28) and bg.split == "background"
    assert ev.images.shape == (659, 20, 1, 28, 28) and ev.split == "evaluation"
    assert bg.images.numel() // (28 * 28) + ev.images.numel() // (28 * 28) == 32_460
    for s in splits:
        assert s.images.dtype == torch.float32
        assert s.images.min() == 0.0 and s.images.max() == 1.0
        # ink = 1: ink is the minority (~8% of pixels), so the mean is small, and the
        # border of every image is background
        assert 0.05 < s.images.mean() < 0.11
        assert s.images[..., 0, :].mean() < 0.01


def test_raw_ink_fraction_and_area_resizing(splits):
    with np.load(os.path.join(DATA, "omniglot", "images_background.npz")) as npz:
        raw = npz["images"][:50]
    full = ink_from_raw(raw, 105)
    torch.testing.assert_close(full, torch.from_numpy(~raw).float().unsqueeze(2))
    assert 0.05 < full.mean() < 0.11  # "ink covers about 8% of the pixels" (SOURCE.md)
    # area resizing keeps the ink fraction of each image (105 -> 21 is exact 5x5 averaging)
    small = ink_from_raw(raw, 21)
    torch.testing.assert_close(small.mean((-1, -2)), full.mean((-1, -2)), atol=1e-5, rtol=0)
    torch.testing.assert_close(small[0, 0, 0, 0, 0], full[0, 0, 0, :5, :5].mean())
    # the cached 28x28 tensor is the same pipeline
    torch.testing.assert_close(splits[0].images[:50], ink_from_raw(raw, 28))


def test_alphabets(splits):
    bg, ev = splits
    assert len(bg.alphabet) == 964 and len(ev.alphabet) == 659
    assert len(set(bg.alphabet)) == 30 and len(set(ev.alphabet)) == 20
    assert not set(bg.alphabet) & set(ev.alphabet)
    assert bg.alphabet[0] == "Arcadian" and bg.alphabet[963] != "Arcadian"
    # character id 709 (row 708) is Alphabet_of_the_Magi/character01 (SOURCE.md name check)
    assert bg.alphabet[708] == "Alphabet_of_the_Magi" and bg.alphabet[707] != bg.alphabet[708]
    rows = alphabet_table()
    assert len(rows) == 50 and rows[0]["alphabet"] == "Arcadian"


def test_shipped_alphabet_table_equals_the_shared_one(omniglot_env):
    shipped = (REPO / "mlbook" / "data" / "omniglot_alphabets.csv").read_bytes()
    assert shipped == open(os.path.join(DATA, "omniglot", "alphabets.csv"), "rb").read()


def test_second_load_comes_from_the_cache(splits, omniglot_env, monkeypatch):
    cached = mlbook.cache_dir("omniglot") / "background_28.pt"
    assert cached.is_file()
    # without the raw data the loader must still work: it reads only the cache
    monkeypatch.setenv("MLBOOK_DATA", omniglot_env)
    again = load_omniglot("background")
    assert torch.equal(again.images, splits[0].images)
    saved = torch.load(cached, weights_only=True)
    assert saved["format"] == CACHE_FORMAT and torch.equal(saved["images"], splits[0].images)


def test_a_cache_of_another_format_is_rebuilt(splits, omniglot_env):
    cached = mlbook.cache_dir("omniglot") / "evaluation_28.pt"
    torch.save(torch.zeros_like(splits[1].images), cached)  # right shape, older format
    assert torch.equal(load_omniglot("evaluation").images, splits[1].images)
    assert torch.load(cached, weights_only=True)["format"] == CACHE_FORMAT  # rewritten


def test_lake_split(splits):
    bg, ev = lake_split()
    assert torch.equal(bg, splits[0].images) and torch.equal(ev, splits[1].images)


def test_standard_split_ids_are_disjoint_and_cover_everything():
    train, test = standard_split_ids(seed=0)
    assert len(train) == 1200 and len(test) == 423
    assert not set(train.tolist()) & set(test.tolist())
    assert sorted(train.tolist() + test.tolist()) == list(range(1623))
    # seeded: same seed same split, other seed other split; both splits mix Lake's halves
    assert torch.equal(train, standard_split_ids(seed=0)[0])
    assert not torch.equal(train, standard_split_ids(seed=1)[0])
    assert (train < 964).any() and (train >= 964).any() and (test >= 964).any()


def test_standard_split(splits):
    train, test = omniglot_standard_split(seed=0)
    assert train.shape == (4800, 20, 1, 28, 28) and test.shape == (423, 20, 1, 28, 28)
    train_ids, test_ids = standard_split_ids(seed=0)
    pooled = torch.cat([splits[0].images, splits[1].images])
    assert torch.equal(test, pooled[test_ids])  # test characters unrotated
    assert torch.equal(train[:1200], pooled[train_ids])
    # class c + k*1200 is character c turned by k*90 degrees
    assert torch.equal(train[1200 + 5], torch.rot90(pooled[train_ids[5]], 1, dims=(-2, -1)))
    assert torch.equal(train[3600 + 5], torch.rot90(pooled[train_ids[5]], 3, dims=(-2, -1)))


def test_standard_split_with_rotated_test_classes_is_the_papers_protocol(splits):
    train, test = omniglot_standard_split(seed=0, rotate_test=True)
    assert train.shape == (4800, 20, 1, 28, 28) and test.shape == (1692, 20, 1, 28, 28)
    unrotated = omniglot_standard_split(seed=0)[1]
    assert torch.equal(test[:423], unrotated)  # rotation 0 first: the default's classes
    # class c + k*423 is test character c turned by k*90 degrees
    for k in (1, 2, 3):
        assert torch.equal(test[k * 423 + 7], torch.rot90(unrotated[7], k, dims=(-2, -1)))
    assert not torch.equal(test[423 + 7], unrotated[7])  # a drawing is not rotation-symmetric
    # the training classes do not depend on the test protocol
    assert torch.equal(train, omniglot_standard_split(seed=0)[0])
    assert omniglot_standard_split(rotations=False, rotate_test=True)[0].shape[0] == 1200
    with pytest.raises(TypeError, match="rotate_test must be True or False"):
        omniglot_standard_split(rotate_test="yes")


def test_rotate_classes_turns_counter_clockwise():
    img = torch.zeros(1, 1, 1, 3, 3)
    img[..., 0, 2] = 1.0  # top-right pixel
    rotated = rotate_classes(img)
    assert rotated.shape == (4, 1, 1, 3, 3)
    assert rotated[1, 0, 0, 0, 0] == 1.0  # 90 degrees ccw: top-right -> top-left
    assert rotated[2, 0, 0, 2, 0] == 1.0  # 180: -> bottom-left


def test_unknown_split_and_bad_size(isolated_cache):
    with pytest.raises(ValueError, match="valid splits are .*background.*evaluation"):
        load_omniglot("train")
    with pytest.raises(ValueError, match="image_size"):
        load_omniglot("background", image_size=0)
    with pytest.raises(ValueError, match="num_train"):
        standard_split_ids(num_train=1623)


def test_missing_file_raises_data_not_found(tmp_path, isolated_cache):
    with pytest.raises(mlbook.DataNotFoundError, match="images_evaluation.npz.*MLBOOK_DATA"):
        load_omniglot("evaluation", root=tmp_path)


def test_corrupted_copy_fails_the_checksum(tmp_path, isolated_cache, omniglot_env):
    copy = tmp_path / "images_evaluation.npz"
    shutil.copyfile(os.path.join(DATA, "omniglot", "images_evaluation.npz"), copy)
    copy.chmod(0o644)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum mismatch") as err:
        load_omniglot("evaluation", root=tmp_path)
    assert NPZ_SHA256["evaluation"] in str(err.value)
    assert not (isolated_cache / "omniglot" / "evaluation_28.pt").exists()  # nothing cached
