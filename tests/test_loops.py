import math

import numpy as np
import pytest

from mlbook.loops import History, mean_confidence_interval


def test_confidence_interval_matches_formula():
    rng = np.random.default_rng(0)
    x = rng.random(400)
    mean, half = mean_confidence_interval(x)
    assert mean == pytest.approx(x.mean())
    assert half == pytest.approx(1.959964 * x.std(ddof=1) / math.sqrt(400), rel=1e-5)
    _, half99 = mean_confidence_interval(x, 0.99)
    assert half99 == pytest.approx(2.575829 * x.std(ddof=1) / math.sqrt(400), rel=1e-5)


def test_confidence_interval_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        mean_confidence_interval([1.0])
    with pytest.raises(ValueError, match="confidence"):
        mean_confidence_interval([1.0, 2.0], confidence=1.5)


def test_history_round_trip():
    h = History()
    h.log(step=1, loss=2.0)
    h.log(step=2, loss=1.0)
    assert h["loss"] == [2.0, 1.0] and h.last("step") == 2
    assert History.from_state_dict(h.state_dict()).series == h.series
    with pytest.raises(KeyError, match="recorded"):
        h["acc"]
