"""Few-shot evaluation of transfer baselines on the same seeded episodes as the meta-learners.

Two ways to use a backbone on an N-way K-shot episode:

- :func:`evaluate_episodes_with_probe`: the "good embedding" baseline (Tian et al. 2020).
  The frozen backbone embeds support and query images once; a classifier fitted on the
  support embeddings (logistic regression or nearest centroid) labels the queries.
- :func:`evaluate_episodes_with_finetuning`: a copy of the backbone gets a new N-way head
  and is trained on the support set for a fixed number of steps, then labels the queries.
  With ``from_scratch=True`` the copy is re-initialised first: the same architecture and
  the same budget without transfer.

Both return the mean query accuracy over episodes and the half-width of its 95% confidence
interval, as few-shot papers report it (:func:`mlbook.loops.mean_confidence_interval`), as
Python floats; :func:`probe_accuracies` and :func:`finetune_accuracies` return the
per-episode accuracies as a NumPy float64 array ``[T]``. Episodes with wrong shapes or
dtypes, or labels that are not ``0..N-1``, are refused with a ValueError that says so.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from mlbook.loops import mean_confidence_interval, progress
from mlbook.models.heads import find_head, replace_head, setattr_head
from mlbook.transfer.features import PrototypeClassifier, extract_features, linear_probe
from mlbook.transfer.finetune import layerwise_param_groups, unfreeze_all, unfreeze_last
from mlbook.transfer.objective import L2SP, RegularisedObjective

CLASSIFIERS: dict[str, Callable[[], object]] = {
    "logistic": linear_probe,
    "centroid": PrototypeClassifier,
}


def _check_labels(support_y: torch.Tensor, query_y: torch.Tensor | None,
                  n_way: int | None = None, where: str = "") -> int:
    """``n_way`` (given, or read from the support labels) after checking both label sets.

    Support labels must be integers covering ``0..n_way-1`` (each class has support
    examples); query labels must lie in that range.
    """
    for name, y in (("support_y", support_y), ("query_y", query_y)):
        if y is not None and (y.dtype.is_floating_point or y.dtype == torch.bool):
            raise ValueError(f"{name}{where} must hold integer class labels, got {y.dtype}; "
                             "convert with .long()")
    if support_y.numel() == 0:
        raise ValueError(f"support_y{where} is empty: every class needs a support example")
    if n_way is None:
        n_way = int(support_y.max()) + 1
    present = torch.unique(support_y).tolist()
    if present != list(range(n_way)):
        raise ValueError(
            f"support labels{where} must be exactly 0..{n_way - 1} (each class with at least one "
            f"support example), found {present}; relabel the classes of the episode 0..N-1"
        )
    if query_y is not None and query_y.numel() and (
        int(query_y.min()) < 0 or int(query_y.max()) >= n_way
    ):
        raise ValueError(
            f"query labels{where} must lie in 0..{n_way - 1} (the support classes), found "
            f"{int(query_y.min())}..{int(query_y.max())}"
        )
    return n_way


def _unpack_episodes(episodes) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(support_x, support_y, query_x, query_y)`` of an Episode or 4-tuple, checked.

    Raises a ValueError naming the problem for wrong shapes, dtypes or labels.
    """
    expected = ("episodes must hold support_x [T, N*K, C, H, W], support_y [T, N*K], "
                "query_x [T, N*Q, C, H, W], query_y [T, N*Q] (an mlbook.data.Episode)")
    if not isinstance(episodes, tuple) or len(episodes) != 4 or not all(
        isinstance(t, torch.Tensor) for t in episodes
    ):
        raise ValueError(f"{expected}; got {type(episodes).__name__}")
    sx, sy, qx, qy = episodes
    if sx.ndim != 5 or qx.ndim != 5 or sy.ndim != 2 or qy.ndim != 2:
        raise ValueError(
            f"{expected}; got shapes {tuple(sx.shape)}, {tuple(sy.shape)}, {tuple(qx.shape)}, "
            f"{tuple(qy.shape)}"
        )
    if sx.shape[:2] != sy.shape or qx.shape[:2] != qy.shape or sx.shape[0] != qx.shape[0]:
        raise ValueError(
            f"{expected}; the counts disagree: support_x {tuple(sx.shape[:2])} vs support_y "
            f"{tuple(sy.shape)}, query_x {tuple(qx.shape[:2])} vs query_y {tuple(qy.shape)}"
        )
    if sx.shape[2:] != qx.shape[2:]:
        raise ValueError(f"support and query images differ in shape: {tuple(sx.shape[2:])} vs "
                         f"{tuple(qx.shape[2:])}")
    if not (sx.dtype.is_floating_point and qx.dtype.is_floating_point):
        raise ValueError(f"images must be floating point, got {sx.dtype} and {qx.dtype}; "
                         "convert with .float()")
    for t in range(sy.shape[0]):
        _check_labels(sy[t], qy[t], where=f" of episode {t}")
    return sx, sy, qx, qy


def probe_accuracies(
    backbone: nn.Module,
    episodes,
    classifier: str | Callable[[], object] = "logistic",
    batch_size: int = 512,
) -> np.ndarray:
    """Query accuracy of a probe on each episode, ``[T]`` in [0, 1].

    The images of all episodes go through the backbone in one pass of
    :func:`~mlbook.transfer.extract_features` (so each image is embedded exactly once), then
    one classifier per episode is fitted on its support embeddings.

    Parameters
    ----------
    backbone
        Maps ``[B, C, H, W]`` to ``[B, D]`` features (head removed or ``nn.Identity``).
    episodes
        A :class:`mlbook.data.Episode` (or 4-tuple) of ``T`` tasks.
    classifier
        ``"logistic"`` (:func:`linear_probe`), ``"centroid"``
        (:class:`PrototypeClassifier`) or a factory returning a fresh scikit-learn
        style classifier (``fit(features, labels)``, ``score(features, labels)``).

    Returns
    -------
    numpy.ndarray
        float64 ``[T]``, one accuracy in [0, 1] per episode.
    """
    sx, sy, qx, qy = _unpack_episodes(episodes)
    if isinstance(classifier, str):
        if classifier not in CLASSIFIERS:
            raise ValueError(f"classifier must be one of {sorted(CLASSIFIERS)}, got {classifier!r}")
        make = CLASSIFIERS[classifier]
    else:
        make = classifier
    t, s, q = sx.shape[0], sx.shape[1], qx.shape[1]
    images = torch.cat([sx.flatten(0, 1), qx.flatten(0, 1)])
    feats = extract_features(backbone, images, batch_size=batch_size)
    support = feats[: t * s].view(t, s, -1)
    query = feats[t * s :].view(t, q, -1)
    accs = [
        make().fit(support[i], sy[i].cpu()).score(query[i], qy[i].cpu())  # type: ignore[attr-defined]
        for i in range(t)
    ]
    return np.asarray(accs, dtype=np.float64)


def evaluate_episodes_with_probe(
    backbone: nn.Module,
    episodes,
    classifier: str | Callable[[], object] = "logistic",
    batch_size: int = 512,
) -> tuple[float, float]:
    """Mean query accuracy of a probe over episodes and its 95% half-width.

    See :func:`probe_accuracies`.
    """
    return mean_confidence_interval(probe_accuracies(backbone, episodes, classifier, batch_size))


def _reinitialise(model: nn.Module) -> None:
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()


def finetune_on_support(
    backbone: nn.Module,
    support_x: torch.Tensor,
    support_y: torch.Tensor,
    n_way: int,
    steps: int = 30,
    lr: float = 1e-3,
    decay: float | None = None,
    lam: float = 0.0,
    alpha: float = 1.0,
    n_blocks: int | None = None,
    from_scratch: bool = False,
    batchnorm: str = "frozen",
    head_init: str = "prototypes",
) -> nn.Module:
    """Fine-tune a copy of ``backbone`` with a new ``n_way`` head on one support set.

    Parameters
    ----------
    backbone
        A network with a ``head`` (or ``fc``/``classifier``) that :func:`replace_head` can
        replace, e.g. a pretrained :class:`~mlbook.models.Conv4`. It is not modified.
    support_x, support_y
        ``[N*K, C, H, W]`` and int64 ``[N*K]`` with labels ``0..n_way-1``.
    steps
        Full-batch Adam steps on the support set (the budget).
    lr, decay
        Learning rate of the head and per-block decay towards the input
        (:func:`layerwise_param_groups`); ``None`` gives every block ``lr``.
    lam, alpha
        Weight of the L2-SP term in :class:`RegularisedObjective` (``lam = 0``: plain
        cross-entropy) and its ``alpha``.
    n_blocks
        Train only the last ``n_blocks`` blocks (:func:`unfreeze_last`; 1 is the head only);
        ``None`` trains all.
    from_scratch
        Re-initialise every layer first (the no-transfer baseline).
    batchnorm
        ``"frozen"``: BatchNorm uses its stored (source) statistics and they do not change,
        the usual choice when fine-tuning on a handful of images; ``"train"``: ordinary
        training mode (batch statistics, running averages updated), needed from scratch
        where no stored statistics exist.
    head_init
        ``"prototypes"`` sets the new head to the nearest-centroid classifier of the
        support embeddings (``w_c = 2 mu_c``, ``b_c = -||mu_c||^2``, Snell et al. 2017), so
        training starts from the probe's answer; ``"random"`` keeps PyTorch's init.

    Returns
    -------
    nn.Module
        The fine-tuned copy, in eval mode.
    """
    if batchnorm not in ("frozen", "train"):
        raise ValueError(f"batchnorm must be 'frozen' or 'train', got {batchnorm!r}")
    if head_init not in ("prototypes", "random"):
        raise ValueError(f"head_init must be 'prototypes' or 'random', got {head_init!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0 (full-batch Adam steps), got {steps!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if support_x.ndim < 2 or support_y.ndim != 1 or support_x.shape[0] != support_y.shape[0]:
        raise ValueError(
            f"need support_x [N*K, C, H, W] and support_y [N*K], got {tuple(support_x.shape)} "
            f"and {tuple(support_y.shape)}"
        )
    _check_labels(support_y, None, n_way)
    net = copy.deepcopy(backbone)
    if from_scratch:
        _reinitialise(net)
    head = replace_head(net, n_way)
    head_name = find_head(net)[0]
    if head_init == "prototypes":
        with torch.no_grad():
            # The embedding is what the network computes with its head taken out.
            setattr_head(net, head_name, nn.Identity())
            feats = net.eval()(support_x).flatten(1)
            setattr_head(net, head_name, head)
            protos = torch.stack([feats[support_y == c].mean(0) for c in range(n_way)])
            head.weight.copy_(2 * protos)
            head.bias.copy_(-protos.pow(2).sum(1))
    unfreeze_all(net)
    if n_blocks is not None:
        unfreeze_last(net, n_blocks)
    penalty = L2SP(net, new=[head_name], alpha=alpha) if lam > 0 else None
    objective = RegularisedObjective(lam, "l2sp", l2sp=penalty) if penalty is not None else None
    opt = torch.optim.Adam(layerwise_param_groups(net, lr, decay))
    for _ in range(steps):
        net.train(batchnorm == "train")
        logits = net(support_x)
        if objective is not None:
            loss = objective(logits, support_y, model=net)
        else:
            loss = nn.functional.cross_entropy(logits, support_y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net.eval()


def finetune_accuracies(
    backbone: nn.Module,
    episodes,
    desc: str = "fine-tune",
    **options,
) -> np.ndarray:
    """Query accuracy after :func:`finetune_on_support` on each episode.

    ``options`` are passed to :func:`finetune_on_support` (``steps``, ``lr``,
    ``from_scratch``, ...); ``n_way`` is read from the labels.

    Returns
    -------
    numpy.ndarray
        float64 ``[T]``, one accuracy in [0, 1] per episode.
    """
    sx, sy, qx, qy = _unpack_episodes(episodes)
    dev = next(backbone.parameters()).device
    accs = []
    for i in progress(range(sx.shape[0]), desc=desc):
        n_way = int(sy[i].max()) + 1
        net = finetune_on_support(backbone, sx[i].to(dev), sy[i].to(dev), n_way, **options)
        with torch.inference_mode():
            pred = net(qx[i].to(dev)).argmax(1)
        accs.append(int((pred == qy[i].to(dev)).sum()) / pred.numel())
    return np.asarray(accs, dtype=np.float64)


def evaluate_episodes_with_finetuning(
    backbone: nn.Module, episodes, **options
) -> tuple[float, float]:
    """Mean query accuracy after per-episode fine-tuning and its 95% half-width.

    See :func:`finetune_accuracies`; ``from_scratch=True, batchnorm="train"`` is the
    no-transfer baseline with the same architecture and budget.
    """
    return mean_confidence_interval(finetune_accuracies(backbone, episodes, **options))
