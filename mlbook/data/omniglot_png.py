"""Omniglot from Lake's original PNG archives, for readers without the shared npz files.

Lake's archives unpack to ``images_{split}/<alphabet>/characterNN/XXXX_YY.png``: ``XXXX`` is
the character id (1..964 background, 965..1623 evaluation), ``YY`` the drawer (01..20), and
every image is a 105x105 1-bit PNG with True (white) = background. :func:`read_png_tree`
turns such a tree into the npz layout that :func:`mlbook.data.load_omniglot` reads
(``images`` bool ``[C, 20, 105, 105]``, ``labels`` int64 ``[C, 20]`` with
``labels[i, j] == i``), rows sorted by character id. :func:`download_omniglot_npz` fetches
the archive with ``torchvision.datasets.Omniglot`` (which checks its md5) and converts it.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from mlbook._env import cache_dir
from mlbook._io import atomic_write
from mlbook.data._omniglot_format import (
    CONVERTED_MARKER,
    DRAWERS,
    NUM_CHARACTERS,
    RAW_SIZE,
    alphabet_names,
    background_mask,
    check_split,
)

_FIRST_ID = {"background": 1, "evaluation": 965}
_NAME = re.compile(r"(\d{4})_(\d{2})\.png")


def _read_png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        if img.size != (RAW_SIZE, RAW_SIZE):
            raise ValueError(f"{path} is {img.size[0]}x{img.size[1]}, expected 105x105")
        return background_mask(img)


def read_png_tree(folder: str | Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read ``<folder>/<alphabet>/characterNN/XXXX_YY.png`` into arrays.

    Returns
    -------
    images
        bool ``[C, 20, 105, 105]``, True = background, rows sorted by character id and
        columns by drawer.
    char_ids
        int64 ``[C]``: the original ids ``XXXX`` (1-based).
    alphabets
        Alphabet folder name of each row.

    Raises
    ------
    ValueError
        If the tree is empty, a character lacks one of the 20 drawers, or file names do not
        follow ``XXXX_YY.png``.
    """
    folder = Path(folder)
    characters = sorted(p for p in folder.glob("*/character*") if p.is_dir())
    if not characters:
        raise ValueError(f"{folder} holds no <alphabet>/characterNN folders")
    rows = []
    for char_dir in characters:
        pngs = sorted(char_dir.glob("*.png"))
        matches = [_NAME.fullmatch(p.name) for p in pngs]
        if not all(matches):
            bad = [p.name for p, m in zip(pngs, matches, strict=True) if not m]
            raise ValueError(f"{char_dir}: file names {bad[:3]} do not follow XXXX_YY.png")
        ids = {int(m.group(1)) for m in matches}
        drawers = sorted(int(m.group(2)) for m in matches)
        if len(ids) != 1 or drawers != list(range(1, DRAWERS + 1)):
            raise ValueError(
                f"{char_dir} must hold drawers 01..20 of one character id, found ids "
                f"{sorted(ids)} and drawers {drawers}; the archive is incomplete, unpack it again"
            )
        by_drawer = sorted(zip(drawers, pngs, strict=True))  # drawers sorted by value above
        rows.append((ids.pop(), char_dir.parent.name, [p for _, p in by_drawer]))
    rows.sort(key=lambda r: r[0])
    char_ids = np.array([r[0] for r in rows], dtype=np.int64)
    if len(set(char_ids.tolist())) != len(char_ids):
        raise ValueError(f"{folder}: a character id occurs in two folders")
    images = np.stack([np.stack([_read_png(p) for p in paths]) for _, _, paths in rows])
    return images, char_ids, [r[1] for r in rows]


def convert_png_tree_to_npz(folder: str | Path, out_path: str | Path,
                            split: str | None = None) -> np.ndarray:
    """Convert a PNG tree to the npz layout of the shared files, written atomically.

    Parameters
    ----------
    folder
        The unpacked ``images_{split}`` folder (or any part of it when ``split`` is None).
    out_path
        The ``.npz`` to write. Besides ``images`` and ``labels`` it holds a 0-d marker array
        ``converted_by_mlbook``, which tells the loader not to expect the published sha256.
    split
        When given, the tree must be the complete split: character ids ``first..last`` and
        the alphabet names of ``alphabets.csv``.

    Returns
    -------
    numpy.ndarray
        The character ids (1-based) of the rows written.
    """
    images, char_ids, alphabets = read_png_tree(folder)
    if split is not None:
        check_split(split)
        first, count = _FIRST_ID[split], NUM_CHARACTERS[split]
        if not np.array_equal(char_ids, np.arange(first, first + count)):
            raise ValueError(
                f"{folder} holds {len(char_ids)} characters, not the complete {split} split "
                f"(ids {first}..{first + count - 1}); delete it and download it again"
            )
        if alphabets != alphabet_names(split):
            raise ValueError(f"{folder}: alphabet folders do not match alphabets.csv")
    labels = np.repeat(np.arange(len(char_ids), dtype=np.int64)[:, None], DRAWERS, axis=1)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez_compressed(f, images=images, labels=labels,
                                **{CONVERTED_MARKER: np.array(True)})

    atomic_write(Path(out_path), write)
    return char_ids


def _fetch_png_tree(split: str) -> Path:
    """Download and unpack Lake's ``images_{split}.zip`` with torchvision (md5-checked)."""
    from torchvision.datasets import Omniglot

    ds = Omniglot(str(cache_dir("omniglot", "download")), background=split == "background",
                  download=True)
    return Path(ds.target_folder)


def download_omniglot_npz(split: str, out_path: str | Path) -> Path:
    """Fetch Lake's PNG archive of ``split`` and write ``out_path`` in the npz layout."""
    check_split(split)
    convert_png_tree_to_npz(_fetch_png_tree(split), out_path, split=split)
    return Path(out_path)
