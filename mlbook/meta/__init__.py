"""mlbook.meta: meta-learning, one algorithm per module.

* :mod:`mlbook.meta.maml` -- MAML (second and first order); Meta-SGD (``learn_inner_lr=True``)
  and ANIL (``adapt="head"``) are options of :class:`MAML`
* :mod:`mlbook.meta.reptile` -- Reptile
* :mod:`mlbook.meta.protonets` -- Prototypical Networks
* :mod:`mlbook.meta.functional` -- a network as a pure function ``f(params, x)``
* :mod:`mlbook.meta.bn_pool` -- batch norm + max-pool (and a first convolution) as one op,
  which the fast CPU path of :mod:`~mlbook.meta.functional` uses
* :mod:`mlbook.meta.train` -- the meta-training loop and few-shot evaluation for all of them
* :mod:`mlbook.meta.distributed` -- that loop on several processes or machines (``torchrun``)
"""

from mlbook.meta.bn_pool import batch_norm_max_pool, conv_batch_norm_max_pool
from mlbook.meta.functional import FunctionalModel, functional_forward
from mlbook.meta.maml import MAML, inner_update
from mlbook.meta.protonets import ProtoNet, prototypes, squared_distances
from mlbook.meta.reptile import Reptile
from mlbook.meta.train import MetaLearner, episode_scores, evaluate, meta_train

__all__ = [
    "MAML",
    "FunctionalModel",
    "MetaLearner",
    "ProtoNet",
    "Reptile",
    "batch_norm_max_pool",
    "conv_batch_norm_max_pool",
    "episode_scores",
    "evaluate",
    "functional_forward",
    "inner_update",
    "meta_train",
    "prototypes",
    "squared_distances",
]
