"""meta_train on two processes (gloo, CPU, 127.0.0.1) is meta_train on one, and fails safely.

The two ranks are ``tests/_distributed_worker.py`` started with the environment ``torchrun``
gives its workers (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR=127.0.0.1``, ...), so the worker,
like a user's script, never calls ``torch.distributed`` itself: ``meta_train`` does.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import _distributed_setups as setups
import pytest
import torch

import mlbook
from mlbook.meta import distributed, meta_train
from mlbook.meta.distributed import TaskShard, fingerprint

REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("_distributed_worker.py")
TOLERANCE = 1e-10
TIMEOUT_S = 8  # the process group's: how long rank 0 waits for the crashed rank 1


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (binding is local; nothing is connected)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ranks(outdir: Path, timeout_s: float, world: int = 2):
    """Start ``world`` worker processes with the environment torchrun would give them."""
    env = {**os.environ, "WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port()), "MLBOOK_DIST_TIMEOUT_S": str(timeout_s),
           "MLBOOK_QUIET": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    if sys.platform.startswith("linux"):
        env["GLOO_SOCKET_IFNAME"] = "lo"  # keep gloo's own sockets on the loopback device
    return [subprocess.Popen([sys.executable, str(WORKER), str(outdir)],
                             env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for r in range(world)]


def finish(proc: subprocess.Popen, timeout_s: float = 120) -> str:
    try:
        output, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        raise AssertionError(f"a rank hung:\n{output}") from None
    assert proc.returncode == 0, f"a rank failed:\n{output}"
    return output


def train_one_process(name: str, steps: int, checkpoint: Path | None = None, seed: int = 0,
                      validate: bool = True) -> dict:
    learner, sampler, optimizer = setups.build(name, seed)
    history = meta_train(learner, sampler, optimizer, steps=steps,
                         val_episodes=setups.validation() if validate else None, eval_every=2,
                         checkpoint=checkpoint, progress=False)
    return setups.snapshot(learner, history)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> tuple[Path, list[dict]]:
    """Both ranks' results (and the folder they wrote to). Rank 1 crashes at the end and then
    hangs on; rank 0 must end by itself within the timeout."""
    outdir = tmp_path_factory.mktemp("two_ranks")
    train_one_process("maml2", setups.CHECKPOINT_STEP, outdir / "one-process.pt",
                      validate=False)
    first, second = start_ranks(outdir, timeout_s=TIMEOUT_S)
    try:
        finish(first)
    finally:
        second.kill()
        output, _ = second.communicate()
    assert (outdir / "rank1.pt").is_file(), f"rank 1 did not get as far as its crash:\n{output}"
    return outdir, [torch.load(outdir / f"rank{r}.pt") for r in range(2)]


def assert_close(ours: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> None:
    """Equal to TOLERANCE, except Conv4's convolution biases (and Meta-SGD's rates for them):
    each bias feeds a batch norm, which subtracts it again, so their exact gradient is zero
    and the computed one is rounding noise (~1e-17) that Adam divides by its own root mean
    square (plus eps) and so turns into steps of up to ~1e-9 * lr, different for any other
    order of the sums."""
    assert ours.keys() == reference.keys() and ours
    for name in reference:
        if re.search(r"features(\.|__)\d(\.|__)0(\.|__)bias$", name):
            continue
        assert ours[name].dtype == torch.float64
        diff = (ours[name] - reference[name]).abs().max().item()
        assert diff <= TOLERANCE, f"{name}: {diff:.2e}"


@pytest.mark.parametrize("name", ["maml2", "fomaml_metasgd", "reptile", "protonet", "icl"])
def test_two_processes_compute_the_one_process_meta_gradient(two_ranks, name):
    _, ranks = two_ranks
    single = train_one_process(name, setups.STEPS)
    for rank in ranks:
        assert_close(rank[name]["grads"], single["grads"])  # the last step's meta-gradient
        assert_close(rank[name]["params"], single["params"])  # after STEPS outer steps
        history = rank[name]["history"]
        assert history["train_loss"] == pytest.approx(single["history"]["train_loss"],
                                                      abs=TOLERANCE)
        assert history["val_acc"] == single["history"]["val_acc"]
        assert history["step"] == single["history"]["step"] == [1, 2, 3]


def test_protonet_with_batch_norm_keeps_the_ranks_identical(two_ranks):
    _, (first, second) = two_ranks
    a, b = first["protonet_bn"], second["protonet_bn"]
    assert a["buffers"] and a["buffers"]["encoder.features.0.1.running_mean"].abs().sum() > 0
    for key in ("params", "grads", "buffers"):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][n], b[key][n]) for n in a[key]), key
    assert a["history"] == b["history"]


def test_only_rank_zero_writes_checkpoints_and_progress(two_ranks):
    outdir, (first, second) = two_ranks
    assert first["calls"]["save_checkpoint"] >= len(setups.SETUPS)
    assert first["calls"]["progress"] == len(setups.SETUPS)
    assert second["calls"] == {}
    for name in setups.SETUPS:
        assert torch.load(outdir / f"{name}.pt")["step"] == setups.STEPS


def test_resume_on_another_number_of_processes(two_ranks, tmp_path):
    outdir, ranks = two_ranks
    # One process wrote a checkpoint at step 2; two processes resumed it to step 4.
    straight = train_one_process("maml2", setups.RESUMED_STEPS, validate=False)
    for rank in ranks:
        assert rank["resumed"]["history"]["step"] == list(range(1, setups.RESUMED_STEPS + 1))
        assert_close(rank["resumed"]["params"], straight["params"])
    # Two processes wrote a checkpoint at step 3; one process resumes it to step 5.
    shutil.copy(outdir / "maml2.pt", tmp_path / "two-processes.pt")
    resumed = train_one_process("maml2", 5, tmp_path / "two-processes.pt", seed=123)
    assert_close(resumed["params"], train_one_process("maml2", 5)["params"])


def test_bad_setups_end_every_rank_with_a_clear_error_before_training(two_ranks):
    for result in two_ranks[1]:
        assert "cannot be split evenly over 2 processes" in result["indivisible"]
        assert "parameters (ranks [1] differ from rank 0)" in result["mismatch"]
        assert "sampler (ranks [1] differ from rank 0)" in result["mismatch"]


def test_a_crashed_rank_ends_the_other_within_the_timeout(two_ranks):
    ours, theirs = two_ranks[1]
    assert theirs["crash"] == "simulated crash of rank 1"
    assert ours["crash_type"] == "RankFailureError"
    assert "Another rank probably crashed" in ours["crash"]
    assert f"at most {TIMEOUT_S} s" in ours["crash"]
    assert TIMEOUT_S <= ours["crash_seconds"] < TIMEOUT_S + 10  # the timeout, not a hang


# ----------------------------------------------------------- in one process, no group

def test_shards_are_disjoint_and_together_the_meta_batch():
    full = next(setups.sampler(num_tasks=4))
    shards = [next(TaskShard(setups.sampler(num_tasks=4), r, 2)) for r in range(2)]
    for field, a, b in zip(full, *shards, strict=True):
        assert torch.equal(torch.cat([a, b]), field)
    with pytest.raises(ValueError, match="cannot be split evenly over 3 processes"):
        next(TaskShard(setups.sampler(num_tasks=4), 0, 3))


def test_fingerprint_sees_parameters_and_settings_but_not_threads():
    def prints(seed=0, threads=1, **settings):
        learner, sampler, optimizer = setups.build("maml2", seed)
        learner.threads = threads
        return fingerprint(learner, sampler, optimizer, steps=3, **settings)

    same = prints()
    assert prints() == same and prints(threads=2) == same
    differ = prints(seed=1)
    assert differ["parameters"] != same["parameters"] and differ["sampler"] == same["sampler"]
    assert prints(step=2)["settings"] != same["settings"]


def test_without_torchrun_there_is_one_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert not distributed.init() and distributed.world_size() == 1 and distributed.rank() == 0
    learner, sampler, optimizer = setups.build("maml2")
    world = distributed.join(learner, sampler, optimizer)
    assert world.size == 1 and world.is_writer and world.shard(sampler) is sampler
    monkeypatch.setenv("MLBOOK_DIST_TIMEOUT_S", "soon")
    with pytest.raises(ValueError, match="MLBOOK_DIST_TIMEOUT_S"):
        distributed._resolve_timeout(None)


def test_each_local_rank_gets_its_own_gpu(monkeypatch):
    monkeypatch.delenv("MLBOOK_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert mlbook.device() == torch.device("cuda", 1)
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(ValueError, match="one process per GPU"):
        mlbook.device()
