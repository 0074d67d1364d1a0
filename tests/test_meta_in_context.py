"""The model-based learners: the in-context transformer and the Conditional Neural Process."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mlbook.data import Episode, SinusoidTasks
from mlbook.meta import (
    ConditionalNeuralProcess,
    InContextLearner,
    MetaLearner,
    attention_mask,
    evaluate,
    meta_train,
)
from mlbook.models import Conv4


def classifier(fast: bool = True) -> InContextLearner:
    torch.manual_seed(0)
    return InContextLearner(Conv4(1, hidden=8, num_classes=None, image_size=16), feature_dim=8,
                            n_way=3, d_model=16, num_layers=2, num_heads=2, fast=fast)


def regressor() -> InContextLearner:
    torch.manual_seed(0)
    return InContextLearner(None, feature_dim=1, d_model=16, num_layers=2, num_heads=2)


def image_task(n_way: int = 3, shots: int = 2, queries: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    sx = torch.rand(n_way * shots, 1, 16, 16, generator=g)
    sy = torch.arange(n_way).repeat_interleave(shots)
    qx = torch.rand(queries, 1, 16, 16, generator=g)
    qy = torch.randint(0, n_way, (queries,), generator=g)
    return sx, sy, qx, qy


def test_the_mask_lets_queries_see_the_support_set_and_themselves_only():
    allowed = attention_mask(2, 3)
    expected = torch.tensor([[1, 1, 0, 0, 0],
                             [1, 1, 0, 0, 0],
                             [1, 1, 1, 0, 0],
                             [1, 1, 0, 1, 0],
                             [1, 1, 0, 0, 1]], dtype=torch.bool)
    assert torch.equal(allowed, expected)
    with pytest.raises(ValueError, match="at least one support"):
        attention_mask(0, 3)


@pytest.mark.parametrize("make", [classifier, regressor, ConditionalNeuralProcess])
def test_model_based_learners_follow_the_interface(make):
    assert isinstance(make(), MetaLearner)


def test_a_query_does_not_depend_on_the_other_queries_or_the_support_order():
    learner = classifier().double().eval()
    sx, sy, qx, _ = image_task()
    sx, qx = sx.double(), qx.double()
    with torch.no_grad():
        logits = learner.predict(learner.adapt(sx, sy), qx)
        assert logits.shape == (4, 3)
        other = torch.cat([qx[:1], torch.rand(5, 1, 16, 16, dtype=torch.float64)])
        alone = learner.predict(learner.adapt(sx, sy), other)[0]
        torch.testing.assert_close(alone, logits[0], rtol=0, atol=1e-6)
        perm = torch.randperm(len(sx))
        shuffled = learner.predict(learner.adapt(sx[perm], sy[perm]), qx)
        torch.testing.assert_close(shuffled, logits, rtol=0, atol=1e-6)
        # and the support set matters: other labels, other predictions
        relabelled = learner.predict(learner.adapt(sx, (sy + 1) % 3), qx)
        assert not torch.allclose(relabelled, logits)


def test_the_episode_path_and_adapt_predict_agree_in_train_and_eval_mode():
    learner = classifier().double()
    sx, sy, qx, qy = image_task()
    episode = Episode(sx[None].double(), sy[None], qx[None].double(), qy[None])
    for mode in (False, True):
        learner.train(mode)
        with torch.no_grad():
            batched = learner.forward_episode(episode)[0]
            # in training mode batch norm sees the support and the queries together
            z = learner._features(torch.cat([episode.support_x[0], episode.query_x[0]]))
            tokens = learner._support_tokens(z[:6], sy)
            one = learner._read(tokens[None], learner._query_tokens(z[6:])[None])[0]
        torch.testing.assert_close(batched, one, rtol=0, atol=1e-10)
    learner.eval()
    with torch.no_grad():
        split = learner.predict(learner.adapt(episode.support_x[0], sy), episode.query_x[0])
    torch.testing.assert_close(split, learner.forward_episode(episode)[0], rtol=0, atol=1e-10)


def test_the_fast_encoder_path_trains_like_the_module():
    sx, sy, qx, qy = image_task()
    episode = Episode(sx[None].double(), sy[None], qx[None].double(), qy[None])
    results = []
    for fast in (True, False):
        learner = classifier(fast).double().train()
        opt = torch.optim.SGD(learner.meta_parameters(), lr=0.1)
        for _ in range(3):
            loss, _ = learner.meta_loss(episode)
            opt.zero_grad()
            loss.backward()
            opt.step()
        results.append(learner.state_dict())
    for name in results[0]:
        torch.testing.assert_close(results[0][name], results[1][name], rtol=0, atol=1e-10,
                                   msg=name)


def test_cnp_summary_is_exactly_order_free_and_queries_are_decoded_alone():
    torch.manual_seed(0)
    cnp = ConditionalNeuralProcess(r_dim=16, hidden=16).double()
    sx, sy = torch.randn(7, 1, dtype=torch.float64), torch.randn(7, 1, dtype=torch.float64)
    x = torch.randn(5, 1, dtype=torch.float64)
    r = cnp.adapt(sx, sy)
    perm = torch.tensor([3, 0, 6, 1, 5, 2, 4])
    # the mean of the same seven rows in another order: equal up to the order of the sum
    torch.testing.assert_close(cnp.adapt(sx[perm], sy[perm]), r, rtol=0, atol=1e-14)
    mean, std = cnp.predict_distribution(r, x)
    assert torch.equal(cnp.predict(r, x[2:3]), mean[2:3]) and (std >= 0.1).all()


@pytest.mark.parametrize(("make", "steps"), [(regressor, 100), (ConditionalNeuralProcess, 400)])
def test_model_based_regressors_learn_sinusoids(make, steps):
    tasks, generator = SinusoidTasks(), torch.Generator().manual_seed(0)
    learner = make()
    sampler = iter(lambda: tasks.sample(16, 10, 10, generator), None)
    val = tasks.sample(32, 10, 10, torch.Generator().manual_seed(1))
    before, _ = evaluate(learner, val)
    opt = torch.optim.Adam(learner.meta_parameters(), lr=1e-3)
    history = meta_train(learner, sampler, opt, steps=steps, val_episodes=val, eval_every=50,
                         progress=False)
    assert "val_mse" in history
    after, _ = evaluate(learner, val)
    assert after < 0.8 * before


def test_bad_inputs_get_clear_errors():
    learner = classifier()
    sx, sy, qx, qy = image_task()
    with pytest.raises(ValueError, match="built for 3 ways"):
        learner.adapt(sx, torch.tensor([0, 1, 2, 3, 0, 1]))
    with pytest.raises(ValueError, match="support set is empty"):
        learner.adapt(sx[:0], sy[:0])
    with pytest.raises(ValueError, match="integer class ids"):
        learner.adapt(sx, sy.float())
    flat = InContextLearner(nn.Flatten(), feature_dim=4, n_way=3, d_model=8, num_heads=2)
    with pytest.raises(ValueError, match="feature_dim=4"):
        flat.adapt(torch.rand(3, 5), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="same shape"):
        learner.meta_loss(Episode(sx[None], sy[None], torch.rand(1, 4, 1, 20, 20), qy[None]))
    with pytest.raises(ValueError, match="context"):
        learner.predict(torch.zeros(6, 5), qx)
    reg = regressor()
    with pytest.raises(ValueError, match="regresses.*class labels"):
        reg.adapt(torch.randn(5, 1), torch.arange(5).view(5, 1))
    with pytest.raises(ValueError, match="feature_dim=1"):
        reg.predict(reg.adapt(torch.randn(5, 1), torch.randn(5, 1)), torch.randn(3, 2))
    cnp = ConditionalNeuralProcess()
    with pytest.raises(ValueError, match="class labels"):
        cnp.adapt(torch.randn(5, 1), torch.arange(5).view(5, 1))
    with pytest.raises(ValueError, match="empty"):
        cnp.adapt(torch.randn(0, 1), torch.randn(0, 1))
    with pytest.raises(ValueError, match=r"x must be \[\.\.\., 1\]"):
        cnp.predict(cnp.adapt(torch.randn(5, 1), torch.randn(5, 1)), torch.randn(3, 2))
    with pytest.raises(ValueError, match="divisible"):
        InContextLearner(nn.Identity(), 4, n_way=3, d_model=10, num_heads=3)
    with pytest.raises(ValueError, match="n_way must be a positive int"):
        InContextLearner(nn.Identity(), 4, n_way=0)
