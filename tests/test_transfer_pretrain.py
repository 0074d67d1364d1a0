"""Supervised fit: it learns, checkpoints atomically, and a resumed run equals an unbroken one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mlbook.checkpoint import load_checkpoint
from mlbook.transfer import fit, tensor_batches


def data(n: int = 64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    return x, y


def model_and_opt():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))
    return model, torch.optim.Adam(model.parameters(), lr=1e-2)


def test_fit_learns_and_records_history():
    model, opt = model_and_opt()
    history = fit(model, data(), opt, steps=60, batch_size=16, log_every=10,
                  val_data=data(32), eval_every=25)
    assert history["step"] == [10, 20, 30, 40, 50, 60]
    assert history["train_loss"][-1] < 0.5 * history["train_loss"][0]
    assert history.last("train_acc") > 0.9
    assert history["val_step"] == [25, 50, 60] and history.last("val_acc") > 0.9
    x, y = data(32)
    with torch.no_grad():  # the logged validation accuracy is the model's, in eval mode
        assert history.last("val_acc") == (model(x).argmax(1) == y).float().mean().item()
    assert model.training  # left in train mode


def test_epochs_and_loader_budgets():
    x, y = data()
    model, opt = model_and_opt()
    assert fit(model, (x, y), opt, epochs=2, batch_size=16, log_every=1)["step"][-1] == 8
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    assert fit(model, loader, opt, steps=5, log_every=1)["step"][-1] == 5  # re-iterates the loader


def test_checkpoint_round_trip_and_resume_equals_uninterrupted(tmp_path):
    x, y = data()
    full_model, full_opt = model_and_opt()
    full = fit(full_model, (x, y), full_opt, steps=40, batch_size=16, log_every=5, seed=3)

    path = tmp_path / "ck.pt"
    model, opt = model_and_opt()
    fit(model, (x, y), opt, steps=20, batch_size=16, log_every=5, seed=3, checkpoint=path)
    state = load_checkpoint(path)  # weights_only=True
    assert state["step"] == 20 and state["history"]["step"] == [5.0, 10.0, 15.0, 20.0]
    assert not list(tmp_path.glob(".*.partial"))  # atomic write left no temporary file

    # A fresh process would build a fresh model and optimizer and pass the same path.
    model2, opt2 = model_and_opt()
    resumed = fit(
        model2, (x, y), opt2, steps=40, batch_size=16, log_every=5, seed=3, checkpoint=path
    )
    assert resumed["step"] == full["step"]
    assert resumed["train_loss"] == pytest.approx(full["train_loss"], rel=1e-5)
    for a, b in zip(model2.state_dict().values(), full_model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    assert load_checkpoint(path)["step"] == 40


def test_resume_from_a_checkpoint_with_the_old_series_names(tmp_path):
    path = tmp_path / "old.pt"
    model, opt = model_and_opt()
    fit(model, data(), opt, steps=10, batch_size=16, log_every=5, checkpoint=path)
    state = load_checkpoint(path)
    state["history"] = {"step": [5.0, 10.0], "loss": [0.7, 0.6], "accuracy": [0.5, 0.6]}
    torch.save(state, path)  # as written before train_loss / train_acc
    history = fit(model, data(), opt, steps=15, batch_size=16, log_every=5, checkpoint=path)
    assert history["step"] == [5.0, 10.0, 15.0]
    assert history["train_loss"][:2] == [0.7, 0.6] and len(history["train_acc"]) == 3
    assert "loss" not in history and "accuracy" not in history


def test_tensor_batches_resume_at_a_step():
    x, y = torch.arange(10.0)[:, None], torch.arange(10)
    stream = tensor_batches(x, y, batch_size=3, seed=1)
    first = [next(stream)[1] for _ in range(7)]
    later = tensor_batches(x, y, batch_size=3, seed=1, start_step=4)
    assert all(torch.equal(next(later)[1], b) for b in first[4:])
    assert all(
        len(set(torch.cat(first[i : i + 3]).tolist())) == 9 for i in (0, 3)
    )  # no repeats in an epoch


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "exactly one"),
        ({"steps": 3, "epochs": 1}, "exactly one"),
        ({"steps": 0}, "steps must"),
        ({"steps": 2, "batch_size": 100}, "batch_size"),
    ],
)
def test_fit_bad_budgets(kwargs, match):
    model, opt = model_and_opt()
    with pytest.raises(ValueError, match=match):
        fit(model, data(), opt, **kwargs)
