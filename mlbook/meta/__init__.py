"""mlbook.meta: meta-learning, one algorithm per module.

* :mod:`mlbook.meta.maml` -- MAML (second and first order), Meta-SGD, ANIL
* :mod:`mlbook.meta.functional` -- a network as a pure function ``f(params, x)``
"""

from mlbook.meta.functional import FunctionalModel, functional_forward
from mlbook.meta.maml import MAML, inner_update

__all__ = [
    "MAML",
    "FunctionalModel",
    "functional_forward",
    "inner_update",
]
