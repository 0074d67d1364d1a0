"""Checkers for the model-based learners (chapter ``in_context``): the in-context learner's
attention mask and the Conditional Neural Process's task summary."""

from __future__ import annotations

from collections.abc import Callable

import torch

from mlbook.exercises._checking import as_tensor, call, compare, exercise, generator, require
from mlbook.meta import ConditionalNeuralProcess, attention_mask


@exercise("in_context", "The attention mask of an in-context learner", 10,
          "boolean tensors; the in-context learner's token sequence")
def check_attention_mask(fn: Callable) -> int:
    """Check ``fn(num_support, num_query) -> bool [S + Q, S + Q]``.

    Entry ``[i, j]`` is ``True`` when token ``i`` may attend to token ``j``; the ``S`` support
    tokens come first. Support tokens see every support token; a query sees every support
    token and itself, never another query. Compared with :func:`mlbook.meta.attention_mask`.
    """
    cases = [(1, 1, "one support and one query token: [[True, False], [True, True]]"),
             (5, 3, "5 support tokens, 3 queries"), (1, 4, "one-shot: a single support token"),
             (6, 0, "no query at all"), (25, 75, "5-way 5-shot with 15 queries per class")]
    for s, q, case in cases:
        received = as_tensor(call(fn, s, q, what="your attention_mask"), "the mask")
        require(received.dtype == torch.bool,
                f"the mask ({case}) should be a bool tensor (True = may attend), got "
                f"{received.dtype}")
        expected = attention_mask(s, q)
        n = s + q
        everything = torch.ones(n, n, dtype=torch.bool)
        queries_see_all = expected.clone()
        queries_see_all[s:, s:] = True
        causal = torch.ones(n, n, dtype=torch.bool).tril()
        no_self = expected.clone()
        no_self[s:, s:] = False
        mistakes = {
            "this is the complement (True = masked out, nn.TransformerEncoder's convention); "
            "here True means 'may attend'": ~expected,
            "the queries attend to each other: a query may see the support set and itself "
            "only, so that its prediction does not depend on the other queries":
                queries_see_all,
            "this is a causal (lower-triangular) mask: support tokens must see the whole "
            "support set, and queries must not see earlier queries": causal,
            "the queries do not attend to themselves: a query token needs itself to know its "
            "own input": no_self,
            "every token attends to every token": everything,
        }
        compare(received, expected, "the mask", {k: v.double() for k, v in mistakes.items()
                                                if not torch.equal(v, expected)},
                case, dtype_kind=None)
    return len(cases)


def _cnp(seed: int, x_dim: int, y_dim: int) -> ConditionalNeuralProcess:
    torch.manual_seed(seed)
    return ConditionalNeuralProcess(x_dim, y_dim, r_dim=8, hidden=16, layers=2).double()


@exercise("in_context", "The Conditional Neural Process's task summary", 10,
          "torch.cat and mean over a dimension; the Conditional Neural Process section")
def check_cnp_summary(fn: Callable) -> int:
    """Check ``fn(encoder, support_x [..., K, x_dim], support_y [..., K, y_dim]) -> r``.

    ``r [..., r_dim]`` is the mean over the ``K`` support pairs of ``encoder(cat(x_i, y_i))``
    (input first, then target, on the last dimension), as
    :meth:`mlbook.meta.ConditionalNeuralProcess.summarise` computes it; any leading
    dimensions (a batch of tasks) are kept.
    """
    cases = [(0, 1, 1, (10,), "one sinusoid task with 10 support points"),
             (1, 2, 1, (4, 5), "a batch of 4 tasks, 2-d inputs"),
             (2, 1, 1, (1,), "one-shot: a single support pair"),
             (3, 3, 2, (2, 1, 6), "two leading dimensions, 3-d inputs and 2-d targets")]
    for seed, x_dim, y_dim, shape, case in cases:
        cnp = _cnp(seed, x_dim, y_dim)
        g = generator(seed)
        sx = torch.randn(*shape, x_dim, generator=g, dtype=torch.float64)
        sy = torch.randn(*shape, y_dim, generator=g, dtype=torch.float64)
        with torch.no_grad():
            received = call(fn, cnp.encoder, sx.clone(), sy.clone(), what="your cnp_summary")
            expected = cnp.summarise(sx, sy)
            per_pair = cnp.encoder(torch.cat([sx, sy], dim=-1))
            mistakes = {
                "the representations are summed over the support pairs, not averaged":
                    per_pair.sum(-2),
                "the mean is over the representation's features (the last dimension), not over "
                "the support pairs (the second-to-last)": per_pair.mean(-1),
            }
            mistakes["the pairs are concatenated as (y, x); the encoder reads (x, y)"] = (
                cnp.encoder(torch.cat([sy, sx], dim=-1)).mean(-2))
        compare(received, expected, "the summary r",
                {k: v for k, v in mistakes.items() if v.shape != expected.shape
                 or not torch.allclose(v, expected)}, case)
    # Closed form: an encoder that returns its input; two pairs (1, 2) and (3, 6) -> (2, 4).
    identity = torch.nn.Identity()
    r = call(fn, identity, torch.tensor([[1.0], [3.0]], dtype=torch.float64),
             torch.tensor([[2.0], [6.0]], dtype=torch.float64), what="your cnp_summary")
    compare(r, torch.tensor([2.0, 4.0], dtype=torch.float64), "the summary",
            case="an identity encoder and the pairs (1, 2), (3, 6): their mean (2, 4)")
    return len(cases) + 1
