"""mlbook.data: Omniglot, few-shot episodes, sinusoid tasks, photos and digits.

Every loader reads raw files from :func:`mlbook.data_root` (``MLBOOK_DATA``), verifies them
by sha256, and caches derived tensors under :func:`mlbook.cache_dir`.
"""

from mlbook.data._files import safe_extract_zip, sha256sum, verify_sha256
from mlbook.data.digits import digits_by_class, load_digits
from mlbook.data.episodes import (
    Episode,
    EpisodeSampler,
    fixed_episodes,
    iter_fixed_episodes,
    sample_episodes,
)
from mlbook.data.hymenoptera import hymenoptera_datasets, hymenoptera_root
from mlbook.data.lake_runs import (
    BPL_ERROR,
    CONVNET_ERROR,
    HUMAN_ERROR,
    OneShotRun,
    load_one_shot_runs,
    score_one_shot_runs,
)
from mlbook.data.omniglot import (
    OmniglotSplit,
    lake_split,
    load_omniglot,
    omniglot_standard_split,
    rotate_classes,
    standard_split_ids,
)
from mlbook.data.sinusoid import SinusoidBatch, SinusoidTasks

__all__ = [
    "digits_by_class",
    "load_digits",
    "hymenoptera_datasets",
    "hymenoptera_root",
    "BPL_ERROR",
    "CONVNET_ERROR",
    "HUMAN_ERROR",
    "OneShotRun",
    "load_one_shot_runs",
    "score_one_shot_runs",
    "Episode",
    "EpisodeSampler",
    "OmniglotSplit",
    "SinusoidBatch",
    "SinusoidTasks",
    "fixed_episodes",
    "iter_fixed_episodes",
    "lake_split",
    "load_omniglot",
    "omniglot_standard_split",
    "rotate_classes",
    "safe_extract_zip",
    "sample_episodes",
    "sha256sum",
    "standard_split_ids",
    "verify_sha256",
]
