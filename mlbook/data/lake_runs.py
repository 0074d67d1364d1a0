"""Lake's 20 official 20-way one-shot classification runs (Lake et al. 2015, *Science*).

Each run shows one image of each of 20 evaluation-set characters (``training``) and 20 new
drawings of the same characters (``test``); a classifier must say, for each test image,
which training image shows the same character. The runs are read straight from
``<data_root>/omniglot/all_runs.zip`` with the same conventions as
:func:`mlbook.data.load_omniglot` (ink 1.0, background 0.0, area resizing).

Error rates reported by Lake, Salakhutdinov & Tenenbaum (2015), Human-level concept
learning through probabilistic program induction, *Science* 350(6266), Fig. 3: people
4.5%, Bayesian Program Learning 3.3%, a deep convolutional network 13.5%.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mlbook import _io
from mlbook._env import cache_dir, data_root, require_files, should_download
from mlbook.data._files import verify_sha256
from mlbook.data._omniglot_format import background_mask, check_image_size, ink_from_raw

#: Error rate of people on the 20 runs (Lake et al. 2015).
HUMAN_ERROR = 0.045
#: Error rate of Bayesian Program Learning (Lake et al. 2015).
BPL_ERROR = 0.033
#: Error rate of the deep convolutional network baseline in Lake et al. (2015).
CONVNET_ERROR = 0.135
#: sha256 of ``all_runs.zip`` (``brendenlake/omniglot`` @ 057f034; see ``omniglot/SOURCE.md``).
ALL_RUNS_SHA256 = "437c1eeab0af8484112e1b4cc0f3d541ec727f7c47b9b202da738af9dfd6c325"
#: Where online readers get ``all_runs.zip`` (the same bytes, checked by sha256).
RUNS_URL = ("https://raw.githubusercontent.com/brendenlake/omniglot/master/python/"
            "one-shot-classification/all_runs.zip")
NUM_RUNS, WAYS = 20, 20


@dataclass
class OneShotRun:
    """One 20-way one-shot run.

    Attributes
    ----------
    name
        ``"run01"`` .. ``"run20"``.
    training
        float32 ``[20, 1, S, S]``: ``classNN.png`` for NN = 1..20, one image per character.
    test
        float32 ``[20, 1, S, S]``: ``itemNN.png``.
    answers
        int64 ``[20]``: index into ``training`` of the character of each test item.
    """

    name: str
    training: torch.Tensor
    test: torch.Tensor
    answers: torch.Tensor


def _read_png(zf: zipfile.ZipFile, name: str) -> np.ndarray:
    """A run PNG as a bool array, True = background (the npz convention)."""
    with Image.open(io.BytesIO(zf.read(name))) as img:
        return background_mask(img)


def _parse_labels(text: str, run: str) -> torch.Tensor:
    """``class_labels.txt`` lines ``runNN/test/itemII.png runNN/training/classCC.png``."""
    answers = {}
    tokens = text.split()
    if len(tokens) != 2 * WAYS:
        raise ValueError(f"{run}/class_labels.txt has {len(tokens)} entries, expected {2 * WAYS}")
    for test_name, train_name in zip(tokens[::2], tokens[1::2], strict=True):
        item = int(Path(test_name).stem.removeprefix("item")) - 1
        answers[item] = int(Path(train_name).stem.removeprefix("class")) - 1
    if sorted(answers) != list(range(WAYS)) or not all(0 <= a < WAYS for a in answers.values()):
        raise ValueError(f"{run}/class_labels.txt does not list items 1..{WAYS} exactly once")
    return torch.tensor([answers[i] for i in range(WAYS)], dtype=torch.int64)


def _runs_zip(root: str | Path | None, download: bool, verify: bool) -> Path:
    folder = Path(root) if root is not None else data_root() / "omniglot"
    path = folder / "all_runs.zip"
    if path.is_file() or not should_download(download):
        require_files(folder, ["all_runs.zip"],
                      hint="or call load_one_shot_runs(download=True) to fetch it")
        if verify:
            verify_sha256(path, ALL_RUNS_SHA256)
        return path
    path = cache_dir("omniglot") / "all_runs.zip"
    if not path.is_file():
        _io.download(RUNS_URL, path, sha256=ALL_RUNS_SHA256)
    try:
        verify_sha256(path, ALL_RUNS_SHA256)  # always: a download is never trusted unchecked
    except ValueError:
        path.unlink()
        raise
    return path


def load_one_shot_runs(image_size: int = 28, root: str | Path | None = None,
                       verify: bool = True, download: bool | None = None) -> list[OneShotRun]:
    """Read Lake's 20 one-shot runs from ``all_runs.zip`` (no extraction).

    Parameters
    ----------
    image_size
        Side ``S`` of the square images in pixels (105 = no resizing).
    root
        Folder holding ``all_runs.zip``; default ``<data_root>/omniglot``.
    verify
        Check the zip's sha256 first.
    download
        When the zip is missing, fetch it from Lake's repository into
        ``cache_dir("omniglot")`` (its sha256 is always checked).
        ``None``: only when ``MLBOOK_DATA`` is unset (see :func:`mlbook._env.should_download`).

    Returns
    -------
    list of OneShotRun
        20 runs, each with ``training`` and ``test`` ``[20, 1, S, S]`` and ``answers`` ``[20]``.
    """
    check_image_size(image_size)
    path = _runs_zip(root, download, verify)
    runs = []
    with zipfile.ZipFile(path) as zf:
        for r in range(1, NUM_RUNS + 1):
            name = f"run{r:02d}"
            training = np.stack([_read_png(zf, f"{name}/training/class{i:02d}.png")
                                 for i in range(1, WAYS + 1)])
            test = np.stack([_read_png(zf, f"{name}/test/item{i:02d}.png")
                             for i in range(1, WAYS + 1)])
            answers = _parse_labels(zf.read(f"{name}/class_labels.txt").decode(), name)
            runs.append(OneShotRun(name, ink_from_raw(training, image_size),
                                   ink_from_raw(test, image_size), answers))
    return runs


def score_one_shot_runs(predict_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                        runs: Sequence[OneShotRun]) -> float:
    """Error rate of a one-shot classifier over the runs (Lake's metric).

    Parameters
    ----------
    predict_fn
        ``predict_fn(training [20, 1, S, S], test [20, 1, S, S])`` returns, for each test
        image, the index (0..19) of the training image it shows: shape ``[20]``.
    runs
        From :func:`load_one_shot_runs`.

    Returns
    -------
    float
        Fraction of the ``20 * len(runs)`` test items classified wrongly.
    """
    if not runs:
        raise ValueError("runs is empty; pass load_one_shot_runs()")
    wrong = total = 0
    for run in runs:
        pred = torch.as_tensor(predict_fn(run.training, run.test)).cpu()
        if pred.shape != run.answers.shape or pred.dtype.is_floating_point:
            raise ValueError(
                f"predict_fn must return integer indices of shape {tuple(run.answers.shape)} "
                f"(one training index per test item), got {pred.dtype} {tuple(pred.shape)} "
                f"for {run.name}"
            )
        wrong += int((pred != run.answers).sum())
        total += pred.numel()
    return wrong / total
