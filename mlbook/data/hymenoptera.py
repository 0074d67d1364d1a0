"""Ants and bees ("hymenoptera"): the two-class photo set of PyTorch's transfer-learning tutorial.

398 photos taken from ImageNet: train 124 ants / 121 bees, val 70 ants / 83 bees. The zip in
``<data_root>/hymenoptera/`` is verified by sha256, unpacked safely once into
``cache_dir("hymenoptera")`` and every photo is checked against the per-image sha256 list
shipped with the package (``mlbook/data/hymenoptera_data.sha256``). Online readers can
``download=True`` the tutorial's zip instead; its bytes differ from the shared zip, so only the
per-image checksums are checked then.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

from PIL import Image

from mlbook import _io
from mlbook._env import cache_dir, data_root, require_files, should_download
from mlbook.data._files import safe_extract_zip, sha256sum, verify_sha256

URL = "https://download.pytorch.org/tutorial/hymenoptera_data.zip"
#: sha256 of the shared ``hymenoptera_data.zip`` (see ``hymenoptera/SOURCE.md``).
ZIP_SHA256 = "475fcd0764db4844bc5b913f1bfaeb6613ede21e20df1be089170c3a10be73cf"
CLASSES = ["ants", "bees"]
#: ImageNet channel statistics used by every torchvision/timm ImageNet model.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_VERIFIED = ".mlbook-verified"  # written after every photo matched its checksum


def image_checksums() -> dict[str, str]:
    """``{relative path: sha256}`` of the 398 photos (``hymenoptera_data/train/ants/...``)."""
    text = resources.files("mlbook.data").joinpath("hymenoptera_data.sha256").read_text()
    sums = {}
    for line in text.splitlines():
        if line.strip():
            # sha256sum format: 64 hex digits, a space, then ' ' or '*', then the path
            # (which may itself contain spaces, e.g. "ant photos.jpg")
            sums[line[66:]] = line[:64]
    return sums


def verify_images(unpacked: str | Path) -> None:
    """Check every photo under ``unpacked`` against :func:`image_checksums`.

    Raises
    ------
    ValueError
        Naming the missing or altered files (at most 5 of each) and what to do.
    """
    unpacked = Path(unpacked)
    missing, altered = [], []
    for rel, expected in image_checksums().items():
        path = unpacked / rel
        if not path.is_file():
            missing.append(rel)
        elif sha256sum(path) != expected:
            altered.append(rel)
    if missing or altered:
        raise ValueError(
            f"the photos unpacked in {unpacked} do not match hymenoptera_data.sha256: "
            f"{len(missing)} missing (e.g. {missing[:5]}), {len(altered)} altered "
            f"(e.g. {altered[:5]}). Delete the zip and {unpacked}, then download it again."
        )


def hymenoptera_root(root: str | Path | None = None, download: bool | None = None) -> Path:
    """Folder holding ``train/`` and ``val/`` (each with ``ants/`` and ``bees/``).

    The first call verifies and unpacks the zip into ``cache_dir("hymenoptera")/unpacked``
    and checks all 398 photos (about a second); later calls only look for the marker file
    written after that check.

    Parameters
    ----------
    root
        Folder holding ``hymenoptera_data.zip``; default ``<data_root>/hymenoptera``.
    download
        Fetch the tutorial's zip from download.pytorch.org when it is missing.
        ``None``: only when ``MLBOOK_DATA`` is unset (see :func:`mlbook._env.should_download`).

    Raises
    ------
    DataNotFoundError
        If the zip is missing and ``download`` is false.
    ValueError
        If a checksum does not match.
    """
    unpacked = cache_dir("hymenoptera") / "unpacked"
    folder = unpacked / "hymenoptera_data"
    if (unpacked / _VERIFIED).is_file():
        return folder
    zip_dir = Path(root) if root is not None else data_root() / "hymenoptera"
    zip_path = zip_dir / "hymenoptera_data.zip"
    # The tutorial's zip has other bytes than the shared one, so it is kept apart from
    # zip_dir (which may be the cache itself) and checked photo by photo only.
    downloaded = cache_dir("hymenoptera", "download") / "hymenoptera_data.zip"
    if zip_path.is_file():
        verify_sha256(zip_path, ZIP_SHA256)
    elif should_download(download):
        if not downloaded.is_file():
            _io.download(URL, downloaded)  # no zip checksum: each photo is checked below
        zip_path = downloaded
    else:
        require_files(zip_dir, ["hymenoptera_data.zip"],
                      hint="or call with download=True to fetch the tutorial's zip")
    # Two processes may unpack at once (chapters run two at a time under `make test`): each
    # extracts and checks into its own staging folder, and only a checked folder is renamed
    # to `unpacked`, so no process ever sees, or deletes, another's half-made folder.
    staging = Path(tempfile.mkdtemp(prefix=".unpacked.", suffix=".partial", dir=unpacked.parent))
    try:
        checked = safe_extract_zip(zip_path, staging / "unpacked")
        try:
            verify_images(checked)
        except ValueError as err:
            if zip_path == downloaded:  # ours to delete, so that the next call downloads again
                downloaded.unlink(missing_ok=True)
            # name the cache folder, not the staging folder deleted below
            raise ValueError(str(err).replace(str(checked), str(unpacked))) from None
        (checked / _VERIFIED).write_text("all photos matched hymenoptera_data.sha256\n")
        if unpacked.exists() and not (unpacked / _VERIFIED).is_file():
            shutil.rmtree(unpacked)  # left by an older version whose photo check failed
        try:
            os.rename(checked, unpacked)
        except OSError:  # another process renamed its checked folder first: use that one
            if not (unpacked / _VERIFIED).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def rgb_loader(path: str) -> Image.Image:
    """Open an image as RGB (the set holds one palette GIF and otherwise mostly RGB JPEGs)."""
    with Image.open(path) as img:
        return img.convert("RGB")


def default_transforms():
    """The tutorial's transforms: (train, val).

    train: ``RandomResizedCrop(224)``, ``RandomHorizontalFlip()``, ``ToTensor()``,
    ``Normalize(IMAGENET_MEAN, IMAGENET_STD)``; val: ``Resize(256)``, ``CenterCrop(224)``,
    ``ToTensor()``, the same ``Normalize``. Tensors are ``[3, 224, 224]`` float32.
    """
    from torchvision import transforms as T

    normalize = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
                       normalize])
    val = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), normalize])
    return train, val


def hymenoptera_datasets(train_transform=None, val_transform=None,
                         root: str | Path | None = None, download: bool | None = None,
                         include_gif: bool = True):
    """The train and val splits as torchvision ``ImageFolder`` data sets.

    Parameters
    ----------
    train_transform, val_transform
        Callables on a PIL RGB image; ``None`` uses :func:`default_transforms`.
    root, download
        As in :func:`hymenoptera_root`.
    include_gif
        Keep ``train/ants/imageNotFound.gif`` (a palette GIF, opened as RGB by
        :func:`rgb_loader`), so the sets hold all 398 files. torchvision's ``ImageFolder``
        skips ``.gif`` files by default, which is why the PyTorch tutorial reports 244
        training images; ``include_gif=False`` reproduces that.

    Returns
    -------
    tuple of ImageFolder
        ``(train, val)`` with 245 (244 without the GIF) and 153 photos;
        ``classes == ["ants", "bees"]`` (labels 0, 1).
    """
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.folder import IMG_EXTENSIONS

    extensions = IMG_EXTENSIONS + ((".gif",) if include_gif else ())

    def is_valid_file(path: str) -> bool:
        return path.lower().endswith(extensions)

    default_train, default_val = default_transforms()
    folder = hymenoptera_root(root, download)
    train = ImageFolder(str(folder / "train"), transform=train_transform or default_train,
                        loader=rgb_loader, is_valid_file=is_valid_file)
    val = ImageFolder(str(folder / "val"), transform=val_transform or default_val,
                      loader=rgb_loader, is_valid_file=is_valid_file)
    for ds in (train, val):
        if ds.classes != CLASSES:
            raise ValueError(f"{ds.root} has classes {ds.classes}, expected {CLASSES}")
    return train, val
