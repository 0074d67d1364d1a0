"""mlbook.transfer: pretraining, feature extraction, fine-tuning and few-shot evaluation.

- :mod:`~mlbook.transfer.pretrain`: :func:`fit`, supervised training with resume.
- :mod:`~mlbook.transfer.features`: :func:`extract_features`, :func:`linear_probe` and
  :class:`PrototypeClassifier` (scikit-learn estimators on the features).
- :mod:`~mlbook.transfer.finetune`: :func:`freeze`, :func:`unfreeze_last`,
  :func:`layerwise_param_groups`; :func:`replace_head` (from :mod:`mlbook.models.heads`).
- :mod:`~mlbook.transfer.objective`: :class:`RegularisedObjective`, :class:`L2SP`.
- :mod:`~mlbook.transfer.fewshot`: :func:`evaluate_episodes_with_probe`,
  :func:`evaluate_episodes_with_finetuning` on seeded few-shot episodes.

Return types follow one rule: features and models are torch objects; scores are NumPy
(per-episode accuracies, float64 ``[T]``) or Python floats (a mean, a half-width, a
probe's ``score``), never tensors.
"""

from mlbook.models.heads import find_head, replace_head
from mlbook.transfer.domain import (
    DomainAdversarialNet,
    GradientReversal,
    add_smooth_texture,
    dann_lambda,
    dann_losses,
    reverse_gradient,
    train_dann,
)
from mlbook.transfer.features import PrototypeClassifier, extract_features, linear_probe
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
    "PrototypeClassifier",
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
    "linear_probe",
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
