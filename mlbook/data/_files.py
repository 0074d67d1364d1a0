"""File plumbing shared by the data loaders: checksums and safe zip extraction.

Raw archives are verified by sha256 before anything is derived from them, and archives are
unpacked so that a malicious or broken zip cannot write outside its target folder and an
interrupted extraction never leaves a half-filled folder that later looks complete. Single
files are written and downloaded by :mod:`mlbook._io`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

_CHUNK = 1 << 20  # 1 MiB: hashing speed is flat above this, memory stays small


def sha256sum(path: str | os.PathLike) -> str:
    """Hex sha256 digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str) -> None:
    """Check that the file at ``path`` has sha256 ``expected``.

    Raises
    ------
    ValueError
        If the digest differs; the message names the file, both digests and the fix.
    """
    got = sha256sum(path)
    if got != expected.lower():
        raise ValueError(
            f"checksum mismatch for {path}: expected sha256 {expected.lower()}, got {got}. "
            "The file is corrupted or a different version; delete it and download it again "
            "(or restore it from the data folder that MLBOOK_DATA points at)."
        )


def _unsafe_reason(info: zipfile.ZipInfo) -> str | None:
    """Why a zip member may not be extracted, or ``None`` if it is a plain file or folder."""
    name = info.filename
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "is an absolute path"
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if ".." in parts:
        return "contains '..' and would escape the target folder"
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "is a symbolic link"
    return None


def safe_extract_zip(zip_path: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract ``zip_path`` so that its members end up under the new folder ``dest``.

    Every member is checked first: absolute paths, ``..`` components and symbolic links are
    refused, so nothing is written outside ``dest``. The archive is unpacked into a temporary
    folder beside ``dest`` and renamed to ``dest`` only when complete, so an interrupted
    extraction leaves no half-filled ``dest`` behind.

    Parameters
    ----------
    zip_path
        The archive.
    dest
        Folder to create; it must not exist yet.

    Returns
    -------
    Path
        ``dest``.

    Raises
    ------
    ValueError
        If a member would escape ``dest`` or is a symbolic link (nothing is extracted).
    FileExistsError
        If ``dest`` already exists.
    """
    zip_path, dest = Path(zip_path), Path(dest)
    if dest.exists():
        raise FileExistsError(
            f"{dest} already exists; delete it to extract {zip_path.name} again."
        )
    with zipfile.ZipFile(zip_path) as zf:
        members = zf.infolist()
        for info in members:
            reason = _unsafe_reason(info)
            if reason:
                raise ValueError(
                    f"refusing to extract {zip_path}: member {info.filename!r} {reason}. "
                    "The archive is corrupted or malicious; delete it and download it again."
                )
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; the extracted folder is ordinary data
        try:
            root = tmp.resolve()
            for info in members:
                target = (tmp / info.filename).resolve()
                # Belt and braces: the name checks above should make this impossible.
                if root != target and root not in target.parents:
                    raise ValueError(f"zip member {info.filename!r} escapes {dest}")
                zf.extract(info, tmp)
            os.replace(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return dest

