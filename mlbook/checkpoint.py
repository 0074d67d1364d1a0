"""Checkpoints that survive a crash: written atomically, read with ``weights_only=True``.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (so it loads
without unpickling arbitrary objects). :func:`save_checkpoint` writes it with
:func:`mlbook._io.atomic_write` (a temporary file in the same folder, flushed to disk and
renamed over the target), so an interrupted run leaves the previous checkpoint intact.
:func:`load_checkpoint` turns a corrupted, foreign or incomplete file into a ``ValueError``
that names the file and what to do.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from mlbook._io import atomic_write


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Atomically save ``state`` (tensors and plain Python values) to ``path``.

    Returns the path written. The parent folder is created when missing.
    """
    if not isinstance(state, dict):
        raise TypeError(f"a checkpoint is a dict, got {type(state).__name__}")
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    required: Iterable[str] = ()) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` with ``weights_only=True``.

    Parameters
    ----------
    path
        The file.
    map_location
        Where tensors go (as in ``torch.load``).
    required
        Keys the checkpoint must have (e.g. ``("model", "optimizer", "step")``).

    Raises
    ------
    FileNotFoundError
        If there is no file at ``path``.
    ValueError
        If the file is truncated or not a PyTorch file, holds objects that
        ``weights_only=True`` refuses to unpickle, is not a dict, or lacks a ``required`` key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        # torch's messages run to paragraphs; their first sentence says what failed
        reason = str(err).strip().split(". ")[0].splitlines()[0] if str(err).strip() else ""
        reason = reason or type(err).__name__
        raise ValueError(
            f"cannot load the checkpoint {path} with weights_only=True ({reason}). It is "
            "truncated, not a PyTorch file, or holds arbitrary Python objects that could run "
            "code when unpickled. Delete it (or pass another path) to start from scratch."
        ) from err
    missing = sorted(set(required) - set(state)) if isinstance(state, dict) else None
    if missing is None or missing:
        found = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(
            f"{path} is not a checkpoint of this kind: expected a dict with the keys "
            f"{sorted(set(required))}, found {found}. Was it written by another program? "
            "Pass another path or delete it to start from scratch."
        )
    return state
