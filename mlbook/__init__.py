"""mlbook: fast adaptation to new tasks, transfer learning and meta-learning in PyTorch.

The package behind the executable book. Data flows one way::

    mlbook.data -> mlbook.models -> mlbook.transfer / mlbook.meta -> mlbook.loops -> mlbook.plots

The helpers at the top level pick a device, seed every generator and find the data.
"""

from mlbook._env import (
    DataNotFoundError,
    cache_dir,
    data_root,
    device,
    seed_everything,
)

__version__ = "0.1.0"

__all__ = [
    "DataNotFoundError",
    "__version__",
    "cache_dir",
    "data_root",
    "device",
    "seed_everything",
]
