"""Converting Lake's PNG tree to the npz layout, tested offline on the real small zip."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from conftest import REPO

from mlbook.data import omniglot_png
from mlbook.data._files import safe_extract_zip
from mlbook.data.omniglot import alphabet_names, load_omniglot, load_raw_omniglot

DATA = os.environ.get("MLBOOK_DATA") or str(REPO.parent / "shared" / "data")
OMNI = os.path.join(DATA, "omniglot")


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory):
    archive = os.path.join(OMNI, "images_background_small1.zip")
    if not os.path.isfile(archive):
        pytest.skip("real data not available: set MLBOOK_DATA to the shared data folder")
    dest = safe_extract_zip(archive, tmp_path_factory.mktemp("png") / "unpacked")
    return dest / "images_background_small1"


@pytest.fixture(scope="module")
def background_raw():
    with np.load(os.path.join(OMNI, "images_background.npz")) as npz:
        return npz["images"]


@pytest.fixture(scope="module")
def converted(small_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("converted") / "converted.npz"
    return out, omniglot_png.convert_png_tree_to_npz(small_tree, out)


def test_conversion_is_pixel_exact(converted, background_raw):
    out, ids = converted
    assert len(ids) == 136 and (np.diff(ids) > 0).all()  # 5 alphabets, sorted by id
    with np.load(out) as npz:
        images, labels = npz["images"], npz["labels"]
        assert omniglot_png.CONVERTED_MARKER in npz.files
    assert images.shape == (136, 20, 105, 105) and images.dtype == np.bool_
    assert labels.shape == (136, 20) and labels.dtype == np.int64
    assert (labels == np.arange(136)[:, None]).all()
    # every PNG equals the shared npz row of its character id (row = id - 1), drawer by drawer
    assert np.array_equal(images, background_raw[ids - 1])
    assert 0.05 < (~images).mean() < 0.11  # True = background, ink ~8%
    assert list(out.parent.iterdir()) == [out]  # atomic: no temporary file left


def test_alphabet_folders_agree_with_the_csv(small_tree):
    _, ids, alphabets = omniglot_png.read_png_tree(small_tree)
    names = alphabet_names("background")
    assert alphabets == [names[i - 1] for i in ids]
    assert set(alphabets) == {"Balinese", "Early_Aramaic", "Greek", "Korean", "Latin"}


def test_partial_tree_is_not_a_split(small_tree, tmp_path, isolated_cache, monkeypatch):
    with pytest.raises(ValueError, match="136 characters, not the complete background"):
        omniglot_png.convert_png_tree_to_npz(small_tree, tmp_path / "x.npz", split="background")
    assert not (tmp_path / "x.npz").exists()
    # download=True goes through the same check (the fetch itself is replaced: no network)
    monkeypatch.setattr(omniglot_png, "_fetch_png_tree", lambda split: small_tree)
    with pytest.raises(ValueError, match="not the complete background split"):
        load_omniglot("background", root=tmp_path / "raw", download=True)
    assert not (tmp_path / "raw" / "images_background.npz").exists()


def test_converted_file_skips_the_published_checksum(converted, tmp_path):
    """A converted npz has other bytes than the published one: its shape is what is checked."""
    shutil.copyfile(converted[0], tmp_path / "images_background.npz")
    with pytest.raises(ValueError, match=r"shape \(136, 20, 105, 105\)"):
        load_raw_omniglot("background", root=tmp_path)


def test_incomplete_character_is_reported(small_tree, tmp_path):
    broken = tmp_path / "tree" / "Greek" / "character01"
    broken.mkdir(parents=True)
    for png in sorted((small_tree / "Greek" / "character01").glob("*.png"))[:19]:
        (broken / png.name).write_bytes(png.read_bytes())
    with pytest.raises(ValueError, match="drawers 01..20"):
        omniglot_png.read_png_tree(tmp_path / "tree")
    with pytest.raises(ValueError, match="no <alphabet>/characterNN"):
        omniglot_png.read_png_tree(tmp_path / "empty")
