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

from mlbook.transfer.domain import (
    DomainAdversarialNet,
    GradientReversal,
    add_smooth_texture,
    dann_lambda,
    dann_losses,
    reverse_gradient,
    train_dann,
)
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
    find_head,
    freeze,
    layerwise_param_groups,
    replace_head,
    trainable_parameters,
    unfreeze_all,
    unfreeze_last,
)
from mlbook.transfer.multitask import (
    MultiTaskNet,
    gradient_cosine,
    task_gradients,
    task_losses,
    train_multitask,
)
from mlbook.transfer.objective import L2SP, RegularisedObjective
from mlbook.transfer.peft import LoRA, add_lora, bitfit, count_parameters
from mlbook.transfer.pretrain import fit, tensor_batches
from mlbook.transfer.selfsup import rotate_images, rotation_batches

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
    "DomainAdversarialNet",
    "GradientReversal",
    "add_smooth_texture",
    "dann_lambda",
    "dann_losses",
    "reverse_gradient",
    "train_dann",
    "MultiTaskNet",
    "gradient_cosine",
    "task_gradients",
    "task_losses",
    "train_multitask",
    "LoRA",
    "add_lora",
    "bitfit",
    "count_parameters",
    "rotate_images",
    "rotation_batches",
]
