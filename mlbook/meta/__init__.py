"""mlbook.meta: meta-learning, one algorithm per module.

* :mod:`mlbook.meta.inner_loop` -- the inner loop of the MAML family (:func:`inner_update`)
* :mod:`mlbook.meta.maml` -- MAML (second and first order); Meta-SGD (``learn_inner_lr=True``)
  and ANIL (``adapt="head"``) are options of :class:`MAML`
* :mod:`mlbook.meta.reptile` -- Reptile
* :mod:`mlbook.meta.protonets` -- Prototypical Networks
* :mod:`mlbook.meta.in_context` -- a transformer that learns in context (model-based)
* :mod:`mlbook.meta.neural_process` -- the Conditional Neural Process (model-based)
* :mod:`mlbook.meta.learner` -- the interface they all implement, and the batch-norm rule
* :mod:`mlbook.meta.functional` -- a network as a pure function ``f(params, x)``
* :mod:`mlbook.meta.train` -- the meta-training loop and few-shot evaluation for all of them
* :mod:`mlbook.meta.distributed` -- that loop on several processes or machines (``torchrun``)

The speed machinery (task threads, a CPU-layout forward, fused ops) is private, in
``mlbook.meta._fast``, switched on by ``fast=True``; the modules above read without it.
"""

from mlbook.meta.functional import functional_forward
from mlbook.meta.in_context import InContextLearner, attention_mask
from mlbook.meta.inner_loop import inner_update
from mlbook.meta.learner import MetaLearner, check_batch_norm, score_name
from mlbook.meta.maml import MAML
from mlbook.meta.neural_process import ConditionalNeuralProcess
from mlbook.meta.protonets import ProtoNet, embed_classes, prototypes, squared_distances
from mlbook.meta.reptile import Reptile
from mlbook.meta.train import episode_scores, evaluate, meta_train

__all__ = [
    "ConditionalNeuralProcess",
    "InContextLearner",
    "MAML",
    "MetaLearner",
    "ProtoNet",
    "embed_classes",
    "Reptile",
    "attention_mask",
    "check_batch_norm",
    "episode_scores",
    "evaluate",
    "functional_forward",
    "inner_update",
    "meta_train",
    "prototypes",
    "score_name",
    "squared_distances",
]
