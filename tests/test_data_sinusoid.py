"""Sinusoid tasks of Finn et al. (2017)."""

from __future__ import annotations

import math

import pytest
import torch

from mlbook.data import SinusoidTasks


def test_shapes_ranges_and_the_function():
    tasks = SinusoidTasks()
    b = tasks.sample(64, 10, 7, generator=torch.Generator().manual_seed(0))
    assert b.support_x.shape == b.support_y.shape == (64, 10, 1)
    assert b.query_x.shape == b.query_y.shape == (64, 7, 1)
    assert b.amplitude.shape == b.phase.shape == (64,)
    assert b.support_x.dtype == torch.float32 and b.num_tasks == 64
    assert 0.1 <= b.amplitude.min() and b.amplitude.max() <= 5.0
    assert 0.0 <= b.phase.min() and b.phase.max() <= math.pi
    xs = torch.cat([b.support_x, b.query_x], 1)
    assert -5.0 <= xs.min() and xs.max() <= 5.0
    # y = A sin(x - phase), recomputed in float64 from the returned parameters
    for x, y in ((b.support_x, b.support_y), (b.query_x, b.query_y)):
        want = b.amplitude.double()[:, None, None] * torch.sin(
            x.double() - b.phase.double()[:, None, None])
        torch.testing.assert_close(y.double(), want, atol=1e-5, rtol=0)
    # |y| <= A and amplitudes spread over the range (not constant)
    assert (b.support_y.abs().squeeze(-1) <= b.amplitude[:, None] + 1e-6).all()
    assert b.amplitude.std() > 0.5


def test_seeded_sampling_is_reproducible_and_dtype_device_respected():
    tasks = SinusoidTasks()
    a = tasks.sample(3, 5, 5, generator=torch.Generator().manual_seed(1))
    b = tasks.sample(3, 5, 5, generator=torch.Generator().manual_seed(1), device="cpu",
                     dtype=torch.float64)
    c = tasks.sample(3, 5, 5, generator=torch.Generator().manual_seed(2))
    assert b.support_x.dtype == torch.float64
    torch.testing.assert_close(a.support_x.double(), b.support_x, atol=1e-6, rtol=0)
    assert not torch.equal(a.support_x, c.support_x)


def test_curve_and_fixed_amplitude():
    x = torch.linspace(-5, 5, 11)
    torch.testing.assert_close(SinusoidTasks.curve(2.0, 0.5, x), 2.0 * torch.sin(x - 0.5))
    b = SinusoidTasks(amplitude=(1.0, 1.0), phase=(0.0, 0.0)).sample(2, 4, 0)
    torch.testing.assert_close(b.support_y, torch.sin(b.support_x))
    assert b.query_x.shape == (2, 0, 1)


@pytest.mark.parametrize("kwargs", [
    {"amplitude": (5.0, 0.1)}, {"phase": (1.0, 0.0)}, {"x_range": (1.0, 1.0)},
    {"x_range": (0.0, float("inf"))}, {"amplitude": 3.0}, {"amplitude": (1.0, 2.0, 3.0)},
])
def test_bad_ranges_raise(kwargs):
    with pytest.raises(ValueError):
        SinusoidTasks(**kwargs)


@pytest.mark.parametrize("args", [(0, 5, 5), (2, 0, 5), (2, 5, -1), (2.0, 5, 5)])
def test_bad_counts_raise(args):
    with pytest.raises(ValueError, match="must be an int"):
        SinusoidTasks().sample(*args)
