"""Shared fixtures. Every test runs with the network cut off: a connection attempt raises."""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def load_script(relative: str) -> ModuleType:
    """Import a file of the repository that is not in a package (``.ci/``, ``book/_ext/``)."""
    path = REPO / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


class NetworkBlockedError(RuntimeError):
    """Raised when a test tries to open a network connection."""


def _blocked(*args, **kwargs):
    raise NetworkBlockedError(
        "tests must not touch the network: write the files the test needs into tmp_path instead"
    )


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Make every socket connection (TCP, UDP connect, DNS through create_connection) fail."""
    monkeypatch.setattr(socket.socket, "connect", _blocked)
    monkeypatch.setattr(socket.socket, "connect_ex", _blocked)
    monkeypatch.setattr(socket, "create_connection", _blocked)
    monkeypatch.setattr(socket, "getaddrinfo", _blocked)
    yield


@pytest.fixture(autouse=True)
def _small_and_seeded():
    """Seed every test; run it on one intra-op thread.

    The tests use tiny models, which run fastest on one thread and are not slowed down by a
    busy machine's cores. Tests of task threads set their own thread counts.
    """
    torch.manual_seed(0)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def shared_data() -> Path:
    """The real data folder (MLBOOK_DATA or ../shared/data); skips when absent."""
    env = os.environ.get("MLBOOK_DATA")
    root = Path(env) if env else REPO.parent / "shared" / "data"
    if not root.is_dir():
        pytest.skip("real data not available: set MLBOOK_DATA to the shared data folder")
    return root


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """A private MLBOOK_CACHE so tests never see or leave derived files elsewhere."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("MLBOOK_CACHE", str(cache))
    return cache
