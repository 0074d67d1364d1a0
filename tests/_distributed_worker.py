"""One rank of the distributed tests, started by ``tests/test_meta_distributed.py``.

``python tests/_distributed_worker.py OUTDIR`` with the environment ``torchrun`` would set
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR=127.0.0.1``, ``MASTER_PORT``): like
a user's script, it calls :func:`mlbook.meta.meta_train` and nothing of ``torch.distributed``.
One pair of processes runs every scenario in turn (starting Python and torch costs more than
the scenarios), the crash last; it writes what it saw to ``OUTDIR/rank{RANK}.pt``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _distributed_setups as setups

import mlbook.loops
import mlbook.meta.train
from mlbook.meta import meta_train

RANK, WORLD = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])


def wait_for_peers(outdir: Path) -> None:
    """Start together (importing torch takes seconds on a busy machine), so that a short
    process-group timeout measures the collectives, not the imports."""
    (outdir / f"ready{RANK}").touch()
    while not all((outdir / f"ready{r}").exists() for r in range(WORLD)):
        time.sleep(0.01)


def count_calls(module, name: str, counter: dict) -> None:
    original = getattr(module, name)

    def counted(*args, **kwargs):
        counter[name] = counter.get(name, 0) + 1
        return original(*args, **kwargs)

    setattr(module, name, counted)


def same_math(outdir: Path) -> dict:
    """Train every setup for a few steps; return parameters, gradients, buffers, histories."""
    calls: dict[str, int] = {}
    count_calls(mlbook.meta.train, "save_checkpoint", calls)
    count_calls(mlbook.loops, "progress", calls)
    out: dict = {}
    for name in setups.SETUPS:
        learner, sampler, optimizer = setups.build(name)
        history = meta_train(learner, sampler, optimizer, steps=setups.STEPS,
                             val_episodes=setups.validation(), eval_every=2,
                             checkpoint=outdir / f"{name}.pt", progress=True)
        out[name] = setups.snapshot(learner, history)
    # Resume a one-process checkpoint on this world of processes.
    learner, sampler, optimizer = setups.build("maml2", seed=99)
    history = meta_train(learner, sampler, optimizer, steps=setups.RESUMED_STEPS,
                         checkpoint=outdir / "one-process.pt", progress=False)
    out["resumed"] = setups.snapshot(learner, history)
    out["calls"] = calls
    return out


def bad_setups() -> dict:
    """A meta-batch the world does not divide, and ranks seeded differently, fail at once."""
    out: dict = {}
    learner, _, optimizer = setups.build("maml2")
    try:
        meta_train(learner, setups.sampler(num_tasks=3), optimizer, steps=1, progress=False)
    except ValueError as exc:
        out["indivisible"] = str(exc)
    learner, _, optimizer = setups.build("maml2", seed=RANK)
    try:
        meta_train(learner, setups.sampler(seed=RANK), optimizer, steps=1, progress=False)
    except ValueError as exc:
        out["mismatch"] = str(exc)
    return out


def crash() -> dict:
    """Rank 1 raises at its second step (and then hangs on); rank 0 must not hang."""
    learner, sampler, optimizer = setups.build("maml2")
    sampler = setups.Crashing(sampler, after=1 if RANK == 1 else 100)
    start = time.perf_counter()
    try:
        meta_train(learner, sampler, optimizer, steps=5, progress=False)
    except RuntimeError as exc:  # RankFailureError on rank 0
        return {"crash": str(exc), "crash_type": type(exc).__name__,
                "crash_seconds": time.perf_counter() - start}
    return {}


def main() -> None:
    outdir = Path(sys.argv[1])
    torch.set_num_threads(1)
    wait_for_peers(outdir)
    result = same_math(outdir)
    result.update(bad_setups())
    result.update(crash())
    torch.save(result, outdir / f"rank{RANK}.pt")
    if RANK == 1:
        time.sleep(120)  # a rank that failed but hangs on: the test kills it


if __name__ == "__main__":
    main()
