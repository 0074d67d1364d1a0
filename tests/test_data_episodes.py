"""Few-shot episodes: shapes, labels, disjointness, determinism, errors."""

from __future__ import annotations

import pytest
import torch

from mlbook.data import (
    Episode,
    EpisodeSampler,
    fixed_episodes,
    iter_fixed_episodes,
    sample_episodes,
)

CLASSES, PER_CLASS = 30, 20


@pytest.fixture
def coded():
    """Images whose every pixel holds its own (class, example) code: class*100 + example."""
    codes = torch.arange(CLASSES)[:, None] * 100 + torch.arange(PER_CLASS)[None, :]
    return codes.float()[:, :, None, None, None].expand(-1, -1, 1, 2, 2).contiguous()


def _codes(x):  # [T, M, 1, 2, 2] -> [T, M] codes
    return x[..., 0, 0, 0].long()


def test_shapes_labels_and_order(coded):
    ep = sample_episodes(coded, n_way=5, k_shot=3, q_queries=4, num_tasks=6,
                         generator=torch.Generator().manual_seed(0))
    assert ep.support_x.shape == (6, 15, 1, 2, 2) and ep.query_x.shape == (6, 20, 1, 2, 2)
    assert ep.support_y.shape == (6, 15) and ep.query_y.shape == (6, 20)
    assert ep.support_y.dtype == ep.query_y.dtype == torch.int64 and ep.num_tasks == 6
    for t in range(6):
        # labels 0..N-1, each exactly K (Q) times, sorted by class
        assert ep.support_y[t].tolist() == [c for c in range(5) for _ in range(3)]
        assert ep.query_y[t].tolist() == [c for c in range(5) for _ in range(4)]
        s, q = _codes(ep.support_x)[t], _codes(ep.query_x)[t]
        # every label is one class in support and query; N distinct classes
        s_cls, q_cls = (s // 100).view(5, 3), (q // 100).view(5, 4)
        assert (s_cls == s_cls[:, :1]).all() and (q_cls == s_cls[:, :1]).all()
        assert len(set(s_cls[:, 0].tolist())) == 5
        # examples drawn without replacement, and support and query share no image
        assert len(set(s.tolist())) == 15 and len(set(q.tolist())) == 20
        assert not set(s.tolist()) & set(q.tolist())


def test_labels_are_remapped_in_random_order(coded):
    ep = sample_episodes(coded, 5, 1, 1, num_tasks=50, generator=torch.Generator().manual_seed(0))
    classes = _codes(ep.support_x) // 100  # [T, 5] class of label 0..4
    # if labels followed class order, every row would be increasing
    increasing = (classes.diff(dim=1) > 0).all(dim=1)
    assert increasing.float().mean() < 0.2
    # every class is used over 50 tasks (random classes, not always the same five)
    assert len(set(classes.flatten().tolist())) == CLASSES


def test_seeded_determinism(coded):
    a = sample_episodes(coded, 5, 1, 5, 4, generator=torch.Generator().manual_seed(3))
    b = sample_episodes(coded, 5, 1, 5, 4, generator=torch.Generator().manual_seed(3))
    c = sample_episodes(coded, 5, 1, 5, 4, generator=torch.Generator().manual_seed(4))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a.support_x, c.support_x)


def test_episode_sampler_is_endless_seeded_and_resettable(coded):
    s1 = EpisodeSampler(coded, 5, 1, 5, num_tasks=2, seed=7)
    s2 = EpisodeSampler(coded, 5, 1, 5, num_tasks=2, seed=7)
    first = [next(s1) for _ in range(3)]
    assert all(torch.equal(e.support_x, next(s2).support_x) for e in first)
    assert not torch.equal(first[0].support_x, first[1].support_x)  # a stream, not a repeat
    s1.reset()
    assert torch.equal(next(iter(s1)).support_x, first[0].support_x)
    for i, ep in enumerate(s1):  # iterating works and never stops on its own
        assert isinstance(ep, Episode)
        if i == 5:
            break


def test_fixed_episodes_are_the_same_every_call_and_prefix_stable(coded):
    a = fixed_episodes(coded, 5, 1, 5, num_tasks=10, seed=0)
    b = fixed_episodes(coded, 5, 1, 5, num_tasks=10, seed=0)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    short = fixed_episodes(coded, 5, 1, 5, num_tasks=4, seed=0)
    assert torch.equal(short.query_x, a.query_x[:4])
    other = fixed_episodes(coded, 5, 1, 5, num_tasks=10, seed=1)
    assert not torch.equal(other.support_x, a.support_x)
    # chunked evaluation sees exactly the same tasks
    chunks = list(iter_fixed_episodes(coded, 5, 1, 5, num_tasks=10, batch_size=4, seed=0))
    assert [c.num_tasks for c in chunks] == [4, 4, 2]
    assert torch.equal(torch.cat([c.support_x for c in chunks]), a.support_x)
    assert torch.equal(torch.cat([c.query_y for c in a.chunks(3)]), a.query_y)


def test_slicing_unpacking_and_to(coded):
    ep = fixed_episodes(coded, 3, 2, 2, num_tasks=5)
    part = ep[1:3]
    assert isinstance(part, Episode) and part.num_tasks == 2
    assert torch.equal(part.support_x, ep.support_x[1:3])
    sx, sy, qx, qy = ep
    assert sx is ep.support_x and ep[0] is ep.support_x and ep[3] is ep.query_y
    moved = ep.to("cpu")
    assert isinstance(moved, Episode) and moved.support_x.device.type == "cpu"
    on_dev = sample_episodes(coded, 3, 1, 1, 2, device="cpu")
    assert on_dev.query_x.device.type == "cpu"


@pytest.mark.parametrize("args, match", [
    ((31, 1, 1, 2), "n_way=31 is more ways than the 30 classes"),
    ((5, 15, 6, 2), "k_shot \\+ q_queries = 15 \\+ 6 = 21 exceeds the 20 examples"),
    ((0, 1, 1, 2), "n_way must be a positive int"),
    ((5, 0, 1, 2), "k_shot must be a positive int"),
    ((5, 1, -1, 2), "q_queries must be a positive int"),
    ((5, 1, 1, 0), "num_tasks must be a positive int"),
])
def test_errors(coded, args, match):
    with pytest.raises(ValueError, match=match):
        sample_episodes(coded, *args)
    with pytest.raises(ValueError, match=match):
        fixed_episodes(coded, *args)


def test_wrong_ndim_and_bad_batch_size(coded):
    with pytest.raises(ValueError, match="5 dimensions"):
        sample_episodes(coded[:, :, 0], 5, 1, 1, 1)
    with pytest.raises(ValueError, match="batch_size"):
        next(iter_fixed_episodes(coded, 5, 1, 1, 4, batch_size=0))
