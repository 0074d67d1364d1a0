"""Writing files so that no reader ever sees half of one: :func:`atomic_write`, :func:`download`.

Both write into a temporary file in the target's folder and rename it over the target only
when it is complete, so an interrupted run (a crash, Ctrl-C, a failed download) leaves the
previous file, or none, and never a truncated one that later looks valid. Every module of
mlbook that writes a file (caches, checkpoints, downloads) goes through here.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch.hub


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)``, flush the file to disk, then rename it to ``path``.

    Parameters
    ----------
    path
        The file to create or replace; its folder is created when missing.
    write
        Writes the whole content to the temporary path it is given (e.g.
        ``lambda tmp: torch.save(state, tmp)``).

    Returns
    -------
    Path
        ``path``.

    Notes
    -----
    If ``write`` raises, the temporary file is deleted and ``path`` keeps its old content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:  # the rename must not reach the disk before the bytes
            os.fsync(f.fileno())
        tmp.chmod(0o644)  # mkstemp makes it private; caches and checkpoints are ordinary files
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def download(url: str, path: str | os.PathLike, sha256: str | None = None,
             progress: bool = True) -> Path:
    """Download ``url`` to ``path`` with ``torch.hub.download_url_to_file``, checked if asked.

    ``torch.hub`` writes into a temporary file beside ``path`` and moves it into place when
    complete, and checks the sha256 of the bytes against ``sha256`` (a full digest or its
    first digits, as in torchvision's file names ``resnet18-f37072fd.pth``).

    Parameters
    ----------
    url
        Any URL ``urllib`` opens (``https://``, ``file://``).
    path
        Where the file goes; its folder is created when missing.
    sha256
        Expected sha256 hex digest or a prefix of it; ``None`` skips the check.
    progress
        Show torch.hub's progress bar (on stderr).

    Raises
    ------
    ValueError
        If the downloaded bytes do not match ``sha256`` (nothing is left at ``path``).
    OSError
        If the URL cannot be read (offline: ``urllib.error.URLError``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = sha256.lower() if sha256 is not None else None
    try:
        torch.hub.download_url_to_file(url, str(path), hash_prefix=prefix, progress=progress)
    except RuntimeError as err:
        if "invalid hash value" not in str(err):
            raise
        raise ValueError(
            f"checksum mismatch for the download of {url}: {err}. The server sent other bytes "
            "than expected (a new version or a broken transfer); nothing was saved at "
            f"{path}. Try again, or put a verified copy there by hand."
        ) from err
    return path
