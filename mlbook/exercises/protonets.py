"""Checkers for the Prototypical Networks exercises (chapter ``fewshot_omniglot``)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from mlbook.exercises._checking import call, compare, exercise, generator, require
from mlbook.meta import prototypes, squared_distances


def episode_embeddings(seed: int, n_way: int, k_shot: int, q_queries: int, dim: int = 6):
    """Support and query embeddings of one task, the support labels in shuffled order."""
    g = generator(seed)
    centres = 2 * torch.randn(n_way, dim, generator=g, dtype=torch.float64)
    support_y = torch.arange(n_way).repeat(k_shot)[torch.randperm(n_way * k_shot, generator=g)]
    support_z = centres[support_y] + torch.randn(n_way * k_shot, dim, generator=g,
                                                 dtype=torch.float64)
    query_y = torch.arange(n_way).repeat(q_queries)[torch.randperm(n_way * q_queries,
                                                                   generator=g)]
    query_z = centres[query_y] + torch.randn(n_way * q_queries, dim, generator=g,
                                             dtype=torch.float64)
    return support_z, support_y, query_z, query_y


#: (seed, n_way, k_shot, q_queries, description)
CASES = [
    (0, 5, 1, 3, "5-way 1-shot"),
    (1, 5, 5, 2, "5-way 5-shot, the support set in shuffled order"),
    (2, 2, 3, 1, "2-way 3-shot"),
    (3, 20, 2, 1, "20-way 2-shot"),
]


def _sorted_reshape_mean(z: torch.Tensor, y: torch.Tensor, n_way: int) -> torch.Tensor:
    return z.view(n_way, -1, z.shape[1]).mean(1)


@exercise("fewshot_omniglot", "The prototypes: class means of the support embeddings", 10,
          "tensor indexing; the Prototypical Networks section")
def check_prototypes(fn: Callable) -> int:
    """Check ``fn(embeddings [S, D], labels [S], n_way) -> prototypes [N, D]``.

    Row ``c`` must be the mean of the embeddings whose label is ``c``; the labels may come in
    any order.
    """
    for seed, n_way, k_shot, _, case in CASES:
        sz, sy, _, _ = episode_embeddings(seed, n_way, k_shot, 1)
        received = call(fn, sz.clone(), sy.clone(), n_way, what="your prototypes function")
        sums = torch.zeros(n_way, sz.shape[1], dtype=sz.dtype).index_add_(0, sy, sz)
        mistakes = {
            "each row is the sum of the class's support embeddings, not their mean "
            "(divide by the number of shots)": sums,
            "every row is the mean of the whole support set: average only the embeddings "
            "whose label is c": sz.mean(0).expand(n_way, -1),
            "the rows are not in label order: row c must be the prototype of label c": sums.flip(0)
            / k_shot,
        }
        mistakes["the code assumes the support set is sorted by class (a reshape); select "
                 "each class's examples by their labels instead"] = _sorted_reshape_mean(
                     sz, sy, n_way)
        compare(received, prototypes(sz, sy, n_way), "the prototypes", mistakes, case)
    z = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [0.0, 2.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    compare(call(fn, z, y, 2, what="your prototypes function"),
            torch.tensor([[1.0, 0.0], [0.0, 3.0]], dtype=torch.float64), "the prototypes",
            case="two classes of two points each, whose means are (1, 0) and (0, 3)")
    return len(CASES) + 1


def _loss(logits: torch.Tensor, query_y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, query_y)


@exercise("fewshot_omniglot", "The Prototypical Networks loss of one task", 15,
          "check_prototypes; softmax cross-entropy")
def check_protonet_loss(fn: Callable) -> int:
    """Check ``fn(support_z, support_y, query_z, query_y, n_way) -> scalar loss``.

    The loss is the cross-entropy, averaged over the queries, of the softmax over negative
    squared Euclidean distances to the prototypes. It must be differentiable: the gradient
    with respect to the embeddings is compared too.
    """
    cases = CASES + [(4, 5, 2, 1, "5-way 2-shot, class 4 has no query")]
    for seed, n_way, k_shot, q_queries, case in cases:
        sz, sy, qz, qy = episode_embeddings(seed, n_way, k_shot, q_queries)
        if "no query" in case:
            qz, qy = qz[qy != n_way - 1], qy[qy != n_way - 1]
        leaves = [t.clone().requires_grad_() for t in (sz, qz)]
        received = call(fn, leaves[0], sy, leaves[1], qy, n_way, what="your loss function")
        protos = prototypes(sz, sy, n_way)
        d2 = squared_distances(qz, protos)
        mistakes = {
            "the logits are +distances: a query should score highest on its NEAREST "
            "prototype, so use the negative squared distance": _loss(d2, qy),
            "the distances are Euclidean, not squared Euclidean": _loss(-d2.sqrt(), qy),
            "the loss is summed over the queries, not averaged": F.cross_entropy(
                -d2, qy, reduction="sum"),
            "the prototypes are sums, not means, of the support embeddings": _loss(
                -squared_distances(qz, protos * k_shot), qy),
        }
        compare(received, _loss(-d2, qy), "the loss", mistakes, case)
        require(isinstance(received, torch.Tensor) and received.requires_grad,
                f"the loss ({case}) is not differentiable: compute it with torch operations "
                "on the embeddings (no .item(), .detach() or NumPy), so that it can train "
                "the encoder")
        grads = torch.autograd.grad(received, leaves, allow_unused=True)
        require(grads[0] is not None, f"the loss ({case}) does not depend on the support "
                "embeddings through the prototypes: no gradient reaches them")
        ref_leaves = [t.clone().requires_grad_() for t in (sz, qz)]
        reference = _loss(-squared_distances(ref_leaves[1], prototypes(ref_leaves[0], sy,
                                                                       n_way)), qy)
        ref_grads = torch.autograd.grad(reference, ref_leaves)
        for name, g, r in zip(("support", "query"), grads, ref_grads, strict=True):
            compare(g, r, f"the gradient of the loss with respect to the {name} embeddings",
                    case=case)
    # Closed form: one query at a prototype, the other prototype at squared distance 1.
    sz = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    sy = torch.tensor([0, 1])
    qz = torch.tensor([[0.0]], dtype=torch.float64)
    qy = torch.tensor([0])
    expected = torch.log1p(torch.exp(torch.tensor(-1.0, dtype=torch.float64)))
    compare(call(fn, sz, sy, qz, qy, 2, what="your loss function"), expected, "the loss",
            case="one query on its class's prototype, the other prototype at squared distance "
                 "1: the loss is log(1 + e^-1)")
    return len(cases) + 1
