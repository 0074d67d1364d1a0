"""Atomic writes and checked downloads (mlbook._io), without the network: file:// URLs."""

from __future__ import annotations

import hashlib

import pytest

from mlbook._io import atomic_write, download


def test_atomic_write_replaces_the_file_or_leaves_it_alone(tmp_path):
    path = tmp_path / "sub" / "x.bin"
    atomic_write(path, lambda tmp: tmp.write_bytes(b"old"))
    assert path.read_bytes() == b"old"

    def half_then_crash(tmp):
        tmp.write_bytes(b"ne")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half_then_crash)
    assert path.read_bytes() == b"old"
    assert [p.name for p in path.parent.iterdir()] == ["x.bin"]  # no temporary file left


def test_download_checks_the_sha256_and_keeps_nothing_on_mismatch(tmp_path):
    source = tmp_path / "source.zip"
    source.write_bytes(b"the archive" * 1000)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    out = download(source.as_uri(), tmp_path / "cache" / "a.zip", sha256=digest, progress=False)
    assert out.read_bytes() == source.read_bytes()
    prefix = download(source.as_uri(), tmp_path / "b.zip", sha256=digest[:8].upper(),
                      progress=False)
    assert prefix.is_file()  # a prefix (any case) is enough, as in torchvision's file names

    with pytest.raises(ValueError, match="checksum mismatch.*nothing was saved") as err:
        download(source.as_uri(), tmp_path / "bad" / "c.zip", sha256="0" * 64, progress=False)
    assert digest in str(err.value)
    assert list((tmp_path / "bad").iterdir()) == []  # neither the file nor a partial one


def test_download_of_a_missing_url_is_an_oserror(tmp_path):
    with pytest.raises(OSError):
        download((tmp_path / "nope.zip").as_uri(), tmp_path / "out.zip", progress=False)
    assert list(tmp_path.glob("out.zip*")) == []  # no file and no partial download
