"""Omniglot (Lake, Salakhutdinov & Tenenbaum 2015): 1,623 handwritten characters x 20 drawers.

Conventions used everywhere in mlbook
-------------------------------------
* Images are float32 with **ink = 1.0 and background = 0.0** (the raw files store the
  opposite, True = white background), shape ``[characters, 20, 1, S, S]``.
* Resizing from 105x105 to ``S x S`` averages areas (``F.interpolate(mode="area")``), so a
  pixel's value is the fraction of ink under it.
* Lake's split: 964 "background" characters (30 alphabets) for learning, 659 "evaluation"
  characters (20 alphabets) for testing (:func:`lake_split`).
* The MAML/ProtoNets split (Vinyals et al. 2016, Finn et al. 2017): 1,200 characters of the
  pooled 1,623 for meta-training (x4 rotations), 423 for testing (:func:`omniglot_standard_split`):
  unrotated by default, or with their rotations as the papers test (``rotate_test=True``,
  1,692 test classes).

Raw data: ``<data_root>/omniglot/images_{background,evaluation}.npz`` (see that folder's
``SOURCE.md``). The resized tensor is cached as ``cache_dir("omniglot")/{split}_{S}.pt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mlbook._env import cache_dir, data_root, require_files, should_download
from mlbook._io import atomic_write
from mlbook.data._files import sha256sum, verify_sha256
from mlbook.data._omniglot_format import (
    CONVERTED_MARKER,
    DRAWERS,
    NUM_CHARACTERS,
    RAW_SIZE,
    alphabet_names,
    check_image_size,
    check_split,
    ink_from_raw,
)
from mlbook.data.omniglot_png import download_omniglot_npz

#: sha256 of the npz files (``bitsandscraps/omniglot`` @ 9514cfd; see ``omniglot/SOURCE.md``).
NPZ_SHA256 = {
    "background": "8bf84167413cd00beacdce3fe582f780ab538d8dbef043a6d688f2527bbce199",
    "evaluation": "0b84c7ffd94c4841c0040e529c86a82eaaccb986d8eadad5673f7991b7475276",
}


@dataclass
class OmniglotSplit:
    """One of Lake's two splits, resized.

    Attributes
    ----------
    images
        float32 ``[C, 20, 1, S, S]``, ink 1.0, background 0.0. Row ``i`` is the character with
        original id ``i + 1`` (background) or ``i + 965`` (evaluation); column ``j`` is drawer
        ``j + 1``.
    alphabet
        Alphabet (folder) name of each of the ``C`` characters, e.g. ``"Arcadian"``.
    split
        ``"background"`` or ``"evaluation"``.
    """

    images: torch.Tensor
    alphabet: list[str]
    split: str

    @property
    def num_characters(self) -> int:
        return self.images.shape[0]


def raw_npz_path(split: str, root: str | Path | None = None, download: bool | None = None) -> Path:
    """Path of ``images_{split}.npz``, downloading and converting it first if asked.

    Raises
    ------
    DataNotFoundError
        If the file is missing and ``download`` is false.
    """
    check_split(split)
    folder = Path(root) if root is not None else data_root() / "omniglot"
    name = f"images_{split}.npz"
    if should_download(download) and not (folder / name).is_file():
        download_omniglot_npz(split, folder / name)
    require_files(
        folder,
        [name],
        hint="or call load_omniglot(..., download=True) to fetch and convert Lake's PNG archive",
    )
    return folder / name


def _converted_here(path: Path) -> bool:
    """Whether ``path`` is an npz this package wrote from a download (it has a marker)."""
    try:
        with np.load(path) as npz:
            return CONVERTED_MARKER in npz.files
    except Exception:  # not even a readable npz: certainly not ours
        return False


def load_raw_omniglot(split: str, root: str | Path | None = None, download: bool | None = None,
                      verify: bool = True) -> np.ndarray:
    """The raw bool array ``[C, 20, 105, 105]`` (True = background) of one split.

    The sha256 of the shared npz is checked when ``verify`` is true, except for a file this
    package converted itself from a download (its bytes are not the published ones); its
    shape is checked in every case.
    """
    path = raw_npz_path(split, root, download)
    if verify and sha256sum(path) != NPZ_SHA256[split] and not _converted_here(path):
        verify_sha256(path, NPZ_SHA256[split])  # raises, naming both digests
    with np.load(path) as npz:
        raw = npz["images"]
    expected = (NUM_CHARACTERS[split], DRAWERS, RAW_SIZE, RAW_SIZE)
    if raw.shape != expected or raw.dtype != np.bool_:
        raise ValueError(
            f"{path} holds images of shape {raw.shape} and dtype {raw.dtype}, expected bool "
            f"{expected}; delete it and download it again."
        )
    return raw


# Version of the cached tensors' format: raise it whenever the pipeline from the raw npz to the
# cached images changes (resizing, ink convention), so that old caches are rebuilt.
CACHE_FORMAT = 1


def load_omniglot(split: str = "background", image_size: int = 28,
                  root: str | Path | None = None, download: bool | None = None) -> OmniglotSplit:
    """Load one of Lake's Omniglot splits as float ink images, resized and cached.

    Parameters
    ----------
    split
        ``"background"`` (964 characters, 30 alphabets) or ``"evaluation"`` (659, 20).
    image_size
        Side ``S`` of the square output in pixels (28 in MAML/ProtoNets; 105 = no resizing).
    root
        Folder holding ``images_{split}.npz``; default ``<data_root>/omniglot``.
    download
        Fetch Lake's PNG archive with torchvision and convert it when the npz is missing.
        ``None``: only when ``MLBOOK_DATA`` is unset (see :func:`mlbook._env.should_download`).

    Returns
    -------
    OmniglotSplit
        ``images`` float32 ``[C, 20, 1, S, S]`` (ink 1.0, background 0.0), ``alphabet``
        (one name per character) and ``split``.

    Notes
    -----
    The first call verifies the npz checksum, resizes all images (a few seconds) and saves
    ``cache_dir("omniglot")/{split}_{S}.pt`` (with :data:`CACHE_FORMAT`); later calls load
    that file (``torch.load(weights_only=True)``), which takes a fraction of a second, and
    rebuild it if its format or shape is not the expected one.
    """
    check_split(split)
    check_image_size(image_size)
    cached = cache_dir("omniglot") / f"{split}_{image_size}.pt"
    images = None
    if cached.is_file():
        saved = torch.load(cached, weights_only=True, map_location="cpu")
        expected = (NUM_CHARACTERS[split], DRAWERS, 1, image_size, image_size)
        if (isinstance(saved, dict) and saved.get("format") == CACHE_FORMAT
                and isinstance(saved.get("images"), torch.Tensor)
                and tuple(saved["images"].shape) == expected):
            images = saved["images"]
        # else: made by another version of this code, or foreign: rebuild it, don't trust it
    if images is None:
        images = ink_from_raw(load_raw_omniglot(split, root, download), image_size)
        atomic_write(cached, lambda tmp: torch.save({"format": CACHE_FORMAT, "images": images},
                                                    tmp))
    return OmniglotSplit(images=images, alphabet=alphabet_names(split), split=split)


def lake_split(image_size: int = 28, root: str | Path | None = None,
               download: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Lake's split: (background ``[964, 20, 1, S, S]``, evaluation ``[659, 20, 1, S, S]``)."""
    return (
        load_omniglot("background", image_size, root, download).images,
        load_omniglot("evaluation", image_size, root, download).images,
    )


def standard_split_ids(seed: int = 0, num_train: int = 1200) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled character ids (0..1622) of the meta-training and test characters.

    Id ``i < 964`` is background row ``i``; id ``i >= 964`` is evaluation row ``i - 964``.
    A ``torch.Generator`` seeded with ``seed`` shuffles the 1,623 ids; the first
    ``num_train`` are for meta-training, the rest for testing. (``torch.randperm`` gives the
    same permutation for a seed on every machine with a given PyTorch version; PyTorch does
    not promise it across versions.)
    """
    total = sum(NUM_CHARACTERS.values())
    if not isinstance(num_train, int) or not 0 < num_train < total:
        raise ValueError(f"num_train must be an int in 1..{total - 1}, got {num_train!r}")
    perm = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    return perm[:num_train], perm[num_train:]


def rotate_classes(images: torch.Tensor) -> torch.Tensor:
    """Make each class at 0, 90, 180 and 270 degrees its own class: ``[C,...] -> [4C,...]``.

    Class ``c + k * C`` of the output is class ``c`` rotated by ``k * 90`` degrees
    counter-clockwise (``torch.rot90`` over the last two dimensions).
    """
    return torch.cat([torch.rot90(images, k, dims=(-2, -1)) for k in range(4)])


def omniglot_standard_split(image_size: int = 28, seed: int = 0, num_train: int = 1200,
                            rotations: bool = True, rotate_test: bool = False,
                            root: str | Path | None = None,
                            download: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The MAML/ProtoNets split (Vinyals et al. 2016; Finn et al. 2017).

    Background and evaluation are pooled (1,623 characters) and shuffled with ``seed``
    (:func:`standard_split_ids`); the first ``num_train`` = 1,200 characters are for
    meta-training, the other 423 for testing. With ``rotations`` each training character at
    0/90/180/270 degrees becomes its own class (4,800 training classes), as in those papers.
    Rotated class ``c + k * 1200`` is character ``c`` turned by ``k * 90`` degrees
    (:func:`rotate_classes`).

    Two test protocols:

    * ``rotate_test=False`` (the default, mlbook's own protocol): the 423 test characters
      **unrotated**, 423 test classes. Nichol et al.'s Reptile code tests this way.
    * ``rotate_test=True`` (the papers' protocol): the test characters with their rotations,
      each rotation its own class, 1,692 test classes (class ``c + k * 423`` is test
      character ``c`` turned by ``k * 90`` degrees). Snell et al. (2017, section 3.1) test
      on "the remaining classes, including rotations"; Finn et al.'s code turns each class of
      a test episode by a random multiple of 90 degrees. (Finn et al.'s draws never put two
      rotations of one character in the same episode; episodes drawn from the 1,692 classes
      here can, rarely.)

    Parameters
    ----------
    image_size, seed, num_train
        Side of the resized images; the shuffle's seed and the number of training
        characters (:func:`standard_split_ids`).
    rotations
        Turn the training characters into 4 classes each (4,800 training classes).
    rotate_test
        Turn the test characters into 4 classes each (1,692 test classes), as the papers do.
    root, download
        As in :func:`load_omniglot`.

    Returns
    -------
    tuple of Tensor
        train ``[C_tr, 20, 1, S, S]`` (4,800 or 1,200 classes) and test ``[C_te, 20, 1, S, S]``
        (423, or 1,692 with ``rotate_test``).
    """
    for name, value in (("rotations", rotations), ("rotate_test", rotate_test)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r}")
    background, evaluation = lake_split(image_size, root, download)
    pooled = torch.cat([background, evaluation])
    train_ids, test_ids = standard_split_ids(seed, num_train)
    train, test = pooled[train_ids], pooled[test_ids]
    if rotations:
        train = rotate_classes(train)
    if rotate_test:
        test = rotate_classes(test)
    return train, test
