"""Ants and bees: verified safe extraction, counts, RGB loading, download path (offline)."""

from __future__ import annotations

import os
import shutil
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from conftest import REPO

import mlbook
from mlbook.data import hymenoptera as hym

DATA = os.environ.get("MLBOOK_DATA") or str(REPO.parent / "shared" / "data")
ZIP = os.path.join(DATA, "hymenoptera", "hymenoptera_data.zip")
needs_data = pytest.mark.skipif(not os.path.isfile(ZIP), reason="real data not available")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    if not os.path.isfile(ZIP):
        pytest.skip("real data not available: set MLBOOK_DATA to the shared data folder")
    saved = os.environ.get("MLBOOK_CACHE")
    os.environ["MLBOOK_CACHE"] = str(tmp_path_factory.mktemp("hym-cache"))
    try:
        yield hym.hymenoptera_root(root=os.path.dirname(ZIP))
    finally:
        if saved is None:
            os.environ.pop("MLBOOK_CACHE")
        else:
            os.environ["MLBOOK_CACHE"] = saved


def test_shipped_checksum_list_matches_the_shared_one():
    sums = hym.image_checksums()
    assert len(sums) == 398
    assert "hymenoptera_data/train/ants/ant photos.jpg" in sums  # the name with a space
    shared = os.path.join(DATA, "hymenoptera", "hymenoptera_data.sha256")
    if os.path.isfile(shared):
        shipped = REPO / "mlbook" / "data" / "hymenoptera_data.sha256"
        assert shipped.read_bytes() == open(shared, "rb").read()


def test_counts_per_split_and_class(folder):
    assert folder.name == "hymenoptera_data"
    counts = Counter(p.parent.relative_to(folder).as_posix()
                     for p in folder.rglob("*") if p.is_file())
    assert counts == {"train/ants": 124, "train/bees": 121, "val/ants": 70, "val/bees": 83}
    assert sum(counts.values()) == 398


def test_second_call_is_cached(folder):
    marker = folder.parent / ".mlbook-verified"
    assert marker.is_file()
    assert hym.hymenoptera_root(root="/nonexistent") == folder  # no zip needed any more


def test_datasets_rgb_and_default_transforms(folder):
    train, val = hym.hymenoptera_datasets()
    assert (len(train), len(val)) == (245, 153)
    assert train.classes == val.classes == ["ants", "bees"]
    assert Counter(train.targets) == {0: 124, 1: 121} and Counter(val.targets) == {0: 70, 1: 83}
    gif = [i for i, (p, _) in enumerate(train.samples) if p.endswith(".gif")]
    assert len(gif) == 1
    x, y = train[gif[0]]  # the palette GIF comes out as a 3-channel tensor
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32 and y == 0
    xv, _ = val[0]
    assert xv.shape == (3, 224, 224)
    assert -2.2 < xv.min() and xv.max() < 2.7  # normalized with ImageNet statistics
    assert hym.rgb_loader(train.samples[gif[0]][0]).mode == "RGB"
    no_gif, _ = hym.hymenoptera_datasets(include_gif=False)
    assert len(no_gif) == 244  # what torchvision's default ImageFolder (and the tutorial) sees
    raw, _ = hym.hymenoptera_datasets(train_transform=lambda im: im.size)
    assert isinstance(raw[0][0], tuple)


def test_missing_zip(tmp_path, isolated_cache):
    # download=False: the default downloads when MLBOOK_DATA is unset, and tests stay offline.
    with pytest.raises(mlbook.DataNotFoundError, match="hymenoptera_data.zip"):
        hym.hymenoptera_root(root=tmp_path, download=False)


@needs_data
def test_corrupted_zip_is_refused(tmp_path, isolated_cache):
    copy = tmp_path / "hymenoptera_data.zip"
    shutil.copyfile(ZIP, copy)
    with open(copy, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ValueError, match="checksum mismatch.*hymenoptera_data.zip"):
        hym.hymenoptera_root(root=tmp_path)
    assert not (isolated_cache / "hymenoptera" / "unpacked").exists()


@needs_data
def test_download_path_checks_each_photo(tmp_path, isolated_cache, monkeypatch):
    """download=True without the network: a stand-in download with other zip bytes."""
    good = tmp_path / "good.zip"
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(ZIP) as src, zipfile.ZipFile(good, "w") as g, \
            zipfile.ZipFile(bad, "w") as b:
        for info in src.infolist():
            data = src.read(info)
            g.writestr(info.filename, data)  # today's timestamps: other zip bytes
            if info.filename.endswith("0013035.jpg"):
                data = data[:-1] + bytes([data[-1] ^ 1])
            b.writestr(info.filename, data)
    fetched = []

    def fake_download(url, path, source=bad, sha256=None):
        fetched.append(url)
        shutil.copyfile(source, path)
        return path

    monkeypatch.setattr(hym._io, "download", fake_download)
    with pytest.raises(ValueError, match="1 altered.*0013035.jpg"):
        hym.hymenoptera_root(root=tmp_path / "empty", download=True)
    assert not (isolated_cache / "hymenoptera" / "unpacked").exists()  # nothing half-trusted
    assert not (isolated_cache / "hymenoptera" / "download" / "hymenoptera_data.zip").exists()
    monkeypatch.setattr(hym._io, "download",
                        lambda url, path: fake_download(url, path, source=good))
    folder = hym.hymenoptera_root(root=tmp_path / "empty", download=True)
    assert fetched == [hym.URL, hym.URL]
    assert len([p for p in folder.rglob("*") if p.is_file()]) == 398
    # with MLBOOK_DATA unset the data root is the cache: a kept download must not be mistaken
    # for the shared zip (whose checksum it would fail) when the cache is rebuilt
    shutil.rmtree(folder.parent)
    monkeypatch.delenv("MLBOOK_DATA", raising=False)
    assert hym.hymenoptera_root(download=True) == folder
    assert fetched == [hym.URL, hym.URL]  # reused, not fetched again



def _staging_left(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "hymenoptera").iterdir() if p.name.startswith("."))


@needs_data
def test_two_unpackers_at_once_share_one_checked_folder(isolated_cache):
    """Chapters run two at a time: concurrent first calls both get the complete folder."""
    with ThreadPoolExecutor(2) as pool:
        folders = list(pool.map(lambda _: hym.hymenoptera_root(root=os.path.dirname(ZIP)),
                                range(2)))
    assert folders[0] == folders[1]
    assert len([p for p in folders[0].rglob("*") if p.is_file()]) == 398
    assert _staging_left(isolated_cache) == []


@needs_data
def test_losing_the_rename_race_keeps_the_winners_folder(isolated_cache, monkeypatch):
    """Another process renames its checked folder first: ours is dropped, theirs is used."""
    real_extract = hym.safe_extract_zip
    unpacked = isolated_cache / "hymenoptera" / "unpacked"

    def extract_while_another_process_wins(zip_path, dest):
        real_extract(zip_path, unpacked)  # the other process, finishing first
        (unpacked / hym._VERIFIED).write_text("checked by the other process\n")
        return real_extract(zip_path, dest)

    monkeypatch.setattr(hym, "safe_extract_zip", extract_while_another_process_wins)
    folder = hym.hymenoptera_root(root=os.path.dirname(ZIP))
    assert (unpacked / hym._VERIFIED).read_text() == "checked by the other process\n"
    assert len([p for p in folder.rglob("*") if p.is_file()]) == 398
    assert _staging_left(isolated_cache) == []


@needs_data
def test_an_unchecked_folder_is_replaced(isolated_cache):
    """A folder without the marker (an older version's failed check) is not trusted."""
    stale = isolated_cache / "hymenoptera" / "unpacked"
    stale.mkdir(parents=True)
    (stale / "half.jpg").write_bytes(b"")
    folder = hym.hymenoptera_root(root=os.path.dirname(ZIP))
    assert not (stale / "half.jpg").exists() and (stale / hym._VERIFIED).is_file()
    assert len([p for p in folder.rglob("*") if p.is_file()]) == 398

def test_verify_images_reports_missing_files(tmp_path):
    (tmp_path / "hymenoptera_data").mkdir()
    with pytest.raises(ValueError, match="398 missing"):
        hym.verify_images(tmp_path)
