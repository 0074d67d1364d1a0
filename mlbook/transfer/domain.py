"""Domain adaptation with a gradient-reversal layer: DANN (Ganin et al. 2016).

Labelled examples come from a *source* domain, unlabelled ones from a shifted *target* domain.
A feature extractor ``F`` feeds two heads: the label classifier ``C`` (trained on the source
labels) and a domain discriminator ``D`` (source = 0, target = 1). Between ``F`` and ``D`` sits
the gradient-reversal layer: the identity going forward, multiplication by ``-lambda`` going
backward. One backward pass then trains ``D`` to tell the domains apart while it trains ``F``
to make them indistinguishable, i.e. it solves the saddle point

    min_{F, C} max_D   L_label(C(F(x_s)), y_s) - lambda * L_domain(D(F(x)), d)

with plain gradient descent. :func:`dann_lambda` is the paper's schedule for ``lambda``;
:func:`add_smooth_texture` makes the shifted domain the book uses (digits on smooth noise).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mlbook.loops import History, progress


class _ReverseGradient(torch.autograd.Function):
    """Identity forward; the incoming gradient times ``-scale`` backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)  # a new tensor, so autograd records this node

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.scale * grad, None


def reverse_gradient(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Return ``x`` unchanged; on the backward pass multiply its gradient by ``-scale``.

    Raises
    ------
    ValueError
        If ``scale`` is negative or not finite (a negative scale would *un*-reverse).
    """
    scale = float(scale)
    if not math.isfinite(scale) or scale < 0:
        raise ValueError(f"scale (lambda) must be a finite number >= 0, got {scale}")
    return _ReverseGradient.apply(x, scale)


class GradientReversal(nn.Module):
    """The gradient-reversal layer as a module; set ``.scale`` to change ``lambda`` in training."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reverse_gradient(x, self.scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


def dann_lambda(progress_fraction: float, gamma: float = 10.0) -> float:
    """Ganin et al.'s schedule ``2 / (1 + exp(-gamma p)) - 1``, from 0 at ``p = 0`` towards 1.

    Starting at 0 keeps the noisy early domain signal from disturbing the features before the
    label classifier has learnt anything.
    """
    if not 0.0 <= progress_fraction <= 1.0:
        raise ValueError(f"progress_fraction must lie in [0, 1], got {progress_fraction}")
    return 2.0 / (1.0 + math.exp(-gamma * progress_fraction)) - 1.0


class DomainAdversarialNet(nn.Module):
    """Features, label classifier and (behind a gradient reversal) domain discriminator.

    ``forward(x)`` returns the class logits ``classifier(features(x))``, so the trained network
    is used and evaluated like any classifier; :meth:`domain_logits` is the adversary's view.

    Parameters
    ----------
    features
        ``[B, ...] -> [B, D]``.
    classifier
        ``[B, D] -> [B, num_classes]``.
    discriminator
        ``[B, D] -> [B, 1]``, logit of "this example comes from the target domain".
    """

    def __init__(self, features: nn.Module, classifier: nn.Module,
                 discriminator: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.classifier = classifier
        self.reversal = GradientReversal(0.0)
        self.discriminator = discriminator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def domain_logits(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, D]`` features -> ``[B]`` domain logits, through the gradient reversal."""
        return self.discriminator(self.reversal(features)).squeeze(-1)


def dann_losses(model: DomainAdversarialNet, source_x: torch.Tensor, source_y: torch.Tensor,
                target_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Label loss on the source batch, domain loss on both batches, discriminator accuracy.

    The domain loss is the binary cross-entropy of the discriminator with labels 0 (source)
    and 1 (target); its gradient reaches the features reversed and scaled by
    ``model.reversal.scale``, so ``label_loss + domain_loss`` is the whole DANN objective.
    """
    if source_x.shape[0] != source_y.shape[0]:
        raise ValueError(f"source_x has {source_x.shape[0]} examples, source_y {source_y.shape[0]}")
    if source_x.shape[1:] != target_x.shape[1:]:
        raise ValueError("source and target examples must have the same shape, got "
                         f"{tuple(source_x.shape[1:])} and {tuple(target_x.shape[1:])}")
    feats = model.features(torch.cat([source_x, target_x]))
    n_source = source_x.shape[0]
    label_loss = F.cross_entropy(model.classifier(feats[:n_source]), source_y)
    domain = torch.cat([torch.zeros(n_source), torch.ones(target_x.shape[0])]).to(feats)
    logits = model.domain_logits(feats)
    domain_loss = F.binary_cross_entropy_with_logits(logits, domain)
    domain_acc = ((logits > 0).to(domain) == domain).float().mean()
    return label_loss, domain_loss, domain_acc.detach()


def train_dann(model: DomainAdversarialNet, source: tuple[torch.Tensor, torch.Tensor],
               target_x: torch.Tensor, optimizer: torch.optim.Optimizer, steps: int,
               batch_size: int = 64, scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
               gamma: float = 10.0, log_every: int = 10, seed: int = 0,
               desc: str = "DANN") -> History:
    """Train with DANN for ``steps`` steps: ``batch_size`` source and target examples each.

    ``lambda`` follows :func:`dann_lambda` over the run. The history records ``step``,
    ``label_loss``, ``domain_loss``, ``domain_accuracy`` (of the discriminator, 0.5 = the
    domains are indistinguishable to it) and ``lambda``, averaged over ``log_every`` steps.
    """
    source_x, source_y = source
    if steps < 1 or batch_size < 1 or log_every < 1:
        raise ValueError(f"steps, batch_size and log_every must be >= 1, got {steps}, "
                         f"{batch_size}, {log_every}")
    if batch_size > min(source_x.shape[0], target_x.shape[0]):
        raise ValueError(f"batch_size {batch_size} exceeds the {source_x.shape[0]} source or "
                         f"{target_x.shape[0]} target examples")
    generator = torch.Generator().manual_seed(seed)
    history, sums = History(), {"label_loss": 0.0, "domain_loss": 0.0, "domain_accuracy": 0.0}
    model.train()
    for step in progress(range(steps), desc=desc):
        model.reversal.scale = dann_lambda(step / steps, gamma)
        i = torch.randint(source_x.shape[0], (batch_size,), generator=generator)
        j = torch.randint(target_x.shape[0], (batch_size,), generator=generator)
        label_loss, domain_loss, domain_acc = dann_losses(model, source_x[i], source_y[i],
                                                          target_x[j])
        optimizer.zero_grad(set_to_none=True)
        (label_loss + domain_loss).backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        for name, value in zip(sums, (label_loss, domain_loss, domain_acc), strict=True):
            sums[name] += value.item()
        if (step + 1) % log_every == 0 or step + 1 == steps:
            count = (step % log_every) + 1
            history.log(step=step + 1, lam=model.reversal.scale,
                        **{k: v / count for k, v in sums.items()})
            sums = dict.fromkeys(sums, 0.0)
    return history


def add_smooth_texture(images: torch.Tensor, amplitude: float = 0.8, cells: int = 3,
                       seed: int = 0) -> torch.Tensor:
    """A shifted domain: each image plus its own smooth random texture, clipped to [0, 1].

    The texture is uniform noise on a ``cells x cells`` grid, upsampled bilinearly to the
    image size and scaled by ``amplitude``: a blotchy background of varying brightness that
    the digits' strokes sit on, like the photo patches of MNIST-M (Ganin et al. 2016).

    Parameters
    ----------
    images
        ``[N, C, H, W]`` with values in [0, 1] (ink 1).
    """
    if images.ndim != 4:
        raise ValueError(f"images must be [N, C, H, W], got shape {tuple(images.shape)}")
    if not 0.0 <= amplitude <= 1.0:
        raise ValueError(f"amplitude must lie in [0, 1], got {amplitude}")
    if cells < 1:
        raise ValueError(f"cells must be >= 1, got {cells}")
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(images.shape[0], 1, cells, cells, generator=generator)
    texture = F.interpolate(noise, size=images.shape[-2:], mode="bilinear", align_corners=False)
    return (images + amplitude * texture.to(images)).clamp(0.0, 1.0)
