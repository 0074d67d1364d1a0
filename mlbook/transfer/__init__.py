"""mlbook.transfer: pretraining, feature extraction, fine-tuning and few-shot evaluation.

- :mod:`~mlbook.transfer.pretrain`: :func:`fit`, supervised training with resume.
- :mod:`~mlbook.transfer.features`: :func:`extract_features`, :class:`LinearProbe`,
  :class:`NearestCentroid`.
- :mod:`~mlbook.transfer.finetune`: :func:`replace_head`, :func:`freeze`,
  :func:`unfreeze_last`, :func:`layerwise_param_groups`.
- :mod:`~mlbook.transfer.objective`: :class:`RegularisedObjective`, :class:`L2SP`.
- :mod:`~mlbook.transfer.fewshot`: :func:`evaluate_episodes_with_probe`,
  :func:`evaluate_episodes_with_finetuning` on seeded few-shot episodes.
"""

from mlbook.models.heads import find_head, replace_head
from mlbook.transfer.features import LinearProbe, NearestCentroid, extract_features
from mlbook.transfer.fewshot import (
    evaluate_episodes_with_finetuning,
    evaluate_episodes_with_probe,
    finetune_accuracies,
    finetune_on_support,
    probe_accuracies,
)
from mlbook.transfer.finetune import (
    batchnorm_eval,
    blocks,
    freeze,
    layerwise_param_groups,
    trainable_parameters,
    unfreeze_all,
    unfreeze_last,
)
from mlbook.transfer.objective import L2SP, RegularisedObjective
from mlbook.transfer.pretrain import fit, tensor_batches

__all__ = [
    "L2SP",
    "LinearProbe",
    "NearestCentroid",
    "RegularisedObjective",
    "batchnorm_eval",
    "evaluate_episodes_with_finetuning",
    "evaluate_episodes_with_probe",
    "finetune_accuracies",
    "finetune_on_support",
    "probe_accuracies",
    "blocks",
    "extract_features",
    "find_head",
    "fit",
    "freeze",
    "layerwise_param_groups",
    "replace_head",
    "tensor_batches",
    "trainable_parameters",
    "unfreeze_all",
    "unfreeze_last",
]
