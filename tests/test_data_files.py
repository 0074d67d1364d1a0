"""Checksums and safe zip extraction (mlbook.data._files)."""

from __future__ import annotations

import hashlib
import stat
import zipfile

import pytest

from mlbook.data import safe_extract_zip, sha256sum, verify_sha256


def test_sha256sum_matches_hashlib(tmp_path):
    data = b"omniglot" * 300_000  # > 1 MiB: several chunks
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert sha256sum(path) == hashlib.sha256(data).hexdigest()
    verify_sha256(path, hashlib.sha256(data).hexdigest().upper())  # case does not matter


def test_verify_sha256_names_file_digests_and_fix(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(b"abc")
    wrong = "0" * 64
    with pytest.raises(ValueError) as err:
        verify_sha256(path, wrong)
    msg = str(err.value)
    assert str(path) in msg and wrong in msg and hashlib.sha256(b"abc").hexdigest() in msg
    assert "delete" in msg and "download" in msg


def _zip(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_safe_extract_zip_extracts_into_new_folder(tmp_path):
    archive = _zip(tmp_path / "ok.zip", {"top/a.txt": "A", "top/sub/b.txt": "B"})
    dest = safe_extract_zip(archive, tmp_path / "out")
    assert (dest / "top" / "a.txt").read_text() == "A"
    assert (dest / "top" / "sub" / "b.txt").read_text() == "B"
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []
    with pytest.raises(FileExistsError, match="already exists"):
        safe_extract_zip(archive, dest)


@pytest.mark.parametrize("evil", ["../evil.txt", "top/../../evil.txt", "/tmp/evil.txt"])
def test_safe_extract_zip_refuses_escaping_members(tmp_path, evil):
    archive = _zip(tmp_path / "evil.zip", {"top/fine.txt": "ok", evil: "pwned"})
    dest = tmp_path / "work" / "out"
    with pytest.raises(ValueError, match="refusing to extract") as err:
        safe_extract_zip(archive, dest)
    assert evil in str(err.value)
    assert not dest.exists()
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "work" / "evil.txt").exists()
    assert not (dest.parent.exists() and any(dest.parent.iterdir()))  # no partial folder left


def test_safe_extract_zip_refuses_symlinks(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("top/link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ValueError, match="symbolic link"):
        safe_extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()
