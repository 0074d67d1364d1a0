"""Where to compute (device), how to be reproducible (seeds) and where the data lives.

Environment variables
---------------------
``MLBOOK_DEVICE``
    Forces the device, e.g. ``cpu`` or ``cuda:1``. Without it, :func:`device` picks CUDA,
    then Apple's MPS, then the CPU. Under ``torchrun`` (``LOCAL_RANK`` set), CUDA means
    ``cuda:LOCAL_RANK``, one GPU per process.
``MLBOOK_DATA``
    Folder holding the raw data sets (``omniglot/``, ``hymenoptera/``), possibly read-only.
    CI and ``make`` point it at ``../shared/data``. Without it, the cache folder is used and
    loaders download into it.
``MLBOOK_CACHE``
    Writable folder for derived files (resized tensors, extracted archives, checkpoints).
    Defaults to ``$XDG_CACHE_HOME/mlbook`` or ``~/.cache/mlbook``.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch


class DataNotFoundError(FileNotFoundError):
    """A data file the book needs is missing; the message says what and where to put it."""


def device(prefer: str | None = None) -> torch.device:
    """Return the device to compute on.

    Parameters
    ----------
    prefer
        An explicit choice (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``). When ``None``,
        ``MLBOOK_DEVICE`` is read, then CUDA, MPS and the CPU are tried in that order.

    Raises
    ------
    ValueError
        If the requested device is not available on this machine.
    """
    choice = prefer or os.environ.get("MLBOOK_DEVICE")
    if choice:
        dev = torch.device(choice)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"device {choice!r} was requested (argument or MLBOOK_DEVICE) but CUDA is not "
                "available here; use 'cpu' or unset MLBOOK_DEVICE."
            )
        if dev.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(
                f"device {choice!r} was requested (argument or MLBOOK_DEVICE) but MPS is not "
                "available here; use 'cpu' or unset MLBOOK_DEVICE."
            )
        return dev
    if torch.cuda.is_available():
        # Under torchrun each process of a node takes its own GPU: cuda:LOCAL_RANK.
        local_rank = os.environ.get("LOCAL_RANK")
        if local_rank is None:
            return torch.device("cuda")
        if int(local_rank) >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK={local_rank} but this node has {torch.cuda.device_count()} GPU(s); "
                "launch at most one process per GPU (torchrun --nproc_per_node=<GPUs>) or set "
                "MLBOOK_DEVICE=cpu"
            )
        return torch.device("cuda", int(local_rank))
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int, deterministic: bool = False) -> torch.Generator:
    """Seed Python's, NumPy's and PyTorch's generators (CPU and CUDA).

    Parameters
    ----------
    seed
        Any non-negative integer.
    deterministic
        Also ask PyTorch for deterministic kernels (slower on GPU; no effect on most CPU ops).

    Returns
    -------
    torch.Generator
        A CPU generator seeded with ``seed``, handy for samplers that take ``generator=``.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - the global generator is what we seed
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.Generator().manual_seed(seed)


def cache_dir(*parts: str, create: bool = True) -> Path:
    """Writable folder for derived files: ``$MLBOOK_CACHE`` or ``~/.cache/mlbook``, + ``parts``."""
    base = os.environ.get("MLBOOK_CACHE")
    if base:
        root = Path(base).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = (Path(xdg) if xdg else Path.home() / ".cache") / "mlbook"
    path = root.joinpath(*parts)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def data_root() -> Path:
    """Folder holding the raw data sets: ``$MLBOOK_DATA`` if set, else :func:`cache_dir`.

    Raises
    ------
    DataNotFoundError
        If ``MLBOOK_DATA`` names a folder that does not exist.
    """
    env = os.environ.get("MLBOOK_DATA")
    if env:
        root = Path(env).expanduser()
        if not root.is_dir():
            raise DataNotFoundError(
                f"MLBOOK_DATA={env!r} is not a folder. Point it at the folder that holds "
                "omniglot/ and hymenoptera/ (in this repository's CI: ../shared/data), "
                "or unset it to download into the cache folder."
            )
        return root
    return cache_dir()


def should_download(download: bool | None) -> bool:
    """Resolve a loader's ``download`` argument.

    ``None`` (the loaders' default) means: download missing files only when ``MLBOOK_DATA`` is
    unset, i.e. for a reader online whose data lives in the cache (Colab, Binder, a laptop).
    With ``MLBOOK_DATA`` set (offline machines, CI) the data folder is taken as complete and
    read-only, and a missing file is an error instead of a download attempt.
    """
    if download is None:
        return not os.environ.get("MLBOOK_DATA")
    return bool(download)


def require_files(folder: Path, names: list[str], hint: str = "") -> None:
    """Raise :class:`DataNotFoundError` naming every file of ``names`` missing from ``folder``."""
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DataNotFoundError(
            f"missing {', '.join(missing)} in {folder}. Set MLBOOK_DATA to the folder that "
            f"contains {folder.name}/ with these files" + (f"; {hint}" if hint else ".")
        )
