"""Omniglot's file format and mlbook's image convention, shared by every Omniglot reader.

A leaf module (it imports no other part of :mod:`mlbook.data`): the npz loader
(:mod:`mlbook.data.omniglot`), the PNG converter (:mod:`mlbook.data.omniglot_png`) and Lake's
one-shot runs (:mod:`mlbook.data.lake_runs`) all read the same 105x105 1-bit drawings (True =
white background) and turn them into float ink images (ink 1.0, background 0.0, area-resized)
with the functions here.
"""

from __future__ import annotations

import csv
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from PIL import Image

SPLITS = ("background", "evaluation")
NUM_CHARACTERS = {"background": 964, "evaluation": 659}
DRAWERS = 20
RAW_SIZE = 105
#: Extra array in an npz converted from Lake's PNGs by :mod:`mlbook.data.omniglot_png`.
CONVERTED_MARKER = "converted_by_mlbook"
_RESIZE_CHUNK = 2048  # images per F.interpolate call: ~90 MB of float32 at 105x105


def check_split(split: str) -> None:
    """Raise a ValueError naming the valid splits unless ``split`` is one of them."""
    if split not in SPLITS:
        raise ValueError(f"unknown Omniglot split {split!r}; valid splits are {list(SPLITS)}")


def check_image_size(image_size: int) -> None:
    """Raise a ValueError unless ``image_size`` is a positive int."""
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise ValueError(f"image_size must be a positive int (e.g. 28), got {image_size!r}")


def alphabet_table() -> list[dict[str, str]]:
    """The 50 rows of ``alphabets.csv`` (shipped with the package) as dictionaries."""
    text = resources.files("mlbook.data").joinpath("omniglot_alphabets.csv").read_text()
    return list(csv.DictReader(text.splitlines()))


def alphabet_names(split: str) -> list[str]:
    """Alphabet name of every character of ``split``, in npz row order."""
    check_split(split)
    names: list[str] = [""] * NUM_CHARACTERS[split]
    for row in alphabet_table():
        if row["split"] == split:
            for i in range(int(row["npz_first_index"]), int(row["npz_last_index"]) + 1):
                names[i] = row["alphabet"]
    if "" in names:  # the shipped table covers every character; a broken copy must not pass
        raise ValueError(f"omniglot_alphabets.csv does not cover every {split} character")
    return names


def background_mask(img: Image.Image) -> np.ndarray:
    """A PNG of Lake's Omniglot files as a bool array, True = background (the npz convention).

    Lake's PNGs are 1-bit; any other mode is thresholded at mid-grey.
    """
    if img.mode != "1":
        return np.asarray(img.convert("L")) > 127
    return np.asarray(img, dtype=bool)


def ink_from_raw(raw: np.ndarray | torch.Tensor, image_size: int) -> torch.Tensor:
    """Raw bool images (True = background) ``[..., 105, 105]`` to float ink ``[..., 1, S, S]``.

    Resizes by area averaging, in chunks of a few thousand images to bound memory.
    """
    raw = torch.as_tensor(np.asarray(raw))
    lead = raw.shape[:-2]
    flat = raw.reshape(-1, 1, *raw.shape[-2:])
    out = torch.empty(flat.shape[0], 1, image_size, image_size, dtype=torch.float32)
    for start in range(0, flat.shape[0], _RESIZE_CHUNK):
        ink = (~flat[start : start + _RESIZE_CHUNK]).float()
        if ink.shape[-1] != image_size or ink.shape[-2] != image_size:
            ink = F.interpolate(ink, size=(image_size, image_size), mode="area")
        out[start : start + ink.shape[0]] = ink
    return out.reshape(*lead, 1, image_size, image_size)
