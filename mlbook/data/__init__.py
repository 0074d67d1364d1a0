"""mlbook.data: Omniglot, few-shot episodes, sinusoid tasks, photos and digits.

Every loader reads raw files from :func:`mlbook.data_root` (``MLBOOK_DATA``), verifies them
by sha256, and caches derived tensors under :func:`mlbook.cache_dir`.
"""

from mlbook.data._files import safe_extract_zip, sha256sum, verify_sha256
from mlbook.data.digits import digits_by_class, digits_images
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
from mlbook.data.omniglot_png import convert_png_tree_to_npz, read_png_tree
from mlbook.data.sinusoid import SinusoidBatch, SinusoidTasks

__all__ = [
    "BPL_ERROR",
    "CONVNET_ERROR",
    "HUMAN_ERROR",
    "Episode",
    "EpisodeSampler",
    "OmniglotSplit",
    "OneShotRun",
    "SinusoidBatch",
    "SinusoidTasks",
    "convert_png_tree_to_npz",
    "digits_by_class",
    "digits_images",
    "fixed_episodes",
    "hymenoptera_datasets",
    "hymenoptera_root",
    "iter_fixed_episodes",
    "lake_split",
    "load_omniglot",
    "load_one_shot_runs",
    "omniglot_standard_split",
    "read_png_tree",
    "rotate_classes",
    "safe_extract_zip",
    "sample_episodes",
    "score_one_shot_runs",
    "sha256sum",
    "standard_split_ids",
    "verify_sha256",
]
