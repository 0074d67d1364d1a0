"""Seconds per ProtoNet training step: ``ProtoNet(fast=True)`` against the module's forward.

The zoo's ProtoNets train on 60-way episodes with 5 queries per class, 1 or 5 shots (360 or
600 drawings of 28x28 per step) through ``Conv4``. This times one full step (forward,
backward, Adam) both ways, alternating the two in rounds so that a change of machine load
hits both, and writes the medians and their ratio::

    python benchmarks/protonet_step.py [--threads 1] [--steps 20] [--write]

``--write`` puts the table, with commit, machine and load before/after, into
``benchmarks/results/protonet_step.md``. The drawings are random: a step's cost does not
depend on what is drawn. That both ways compute the same training is a unit test
(``tests/test_meta_protonets.py``), not measured here.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time

import torch
from _provenance import REPO, cpu_model, sh  # benchmarks/ is on sys.path when run

from mlbook._io import atomic_write
from mlbook.data import Episode
from mlbook.meta import ProtoNet
from mlbook.models import Conv4

SETTINGS = {"60-way 1-shot": (60, 1, 5), "60-way 5-shot": (60, 5, 5)}


def random_episode(n_way: int, k_shot: int, queries: int, generator: torch.Generator
                   ) -> Episode:
    def images(per_class: int) -> torch.Tensor:
        return torch.rand(1, n_way * per_class, 1, 28, 28, generator=generator)

    def labels(per_class: int) -> torch.Tensor:
        return torch.arange(n_way).repeat_interleave(per_class).unsqueeze(0)

    return Episode(images(k_shot), labels(k_shot), images(queries), labels(queries))


def time_steps(net: ProtoNet, episode: Episode, steps: int) -> list[float]:
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        optimizer.zero_grad()
        net.meta_loss(episode)[0].backward()
        optimizer.step()
        seconds.append(time.perf_counter() - start)
    return seconds


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per way and setting")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.steps < 1:
        parser.error("--threads and --steps must be at least 1")
    torch.set_num_threads(args.threads)
    load_before, commit = sh("cat /proc/loadavg"), sh("git rev-parse HEAD")
    dirty = bool(sh("git status --porcelain -- mlbook benchmarks"))
    wall = time.time()
    rows = ["| episode | fast=False (s) | fast=True (s) | speed-up |", "|---|---:|---:|---:|"]
    for label, (n_way, k_shot, queries) in SETTINGS.items():
        torch.manual_seed(0)
        encoder = Conv4(1, 64, num_classes=None, image_size=28)
        nets = {fast: ProtoNet(copy.deepcopy(encoder), fast=fast).train()
                for fast in (False, True)}
        episode = random_episode(n_way, k_shot, queries, torch.Generator().manual_seed(0))
        times: dict[bool, list[float]] = {False: [], True: []}
        for net in nets.values():
            time_steps(net, episode, 2)  # warm-up
        rounds = 4
        for _ in range(rounds):  # alternate, so that a change of load hits both
            for fast, net in nets.items():
                times[fast] += time_steps(net, episode, max(1, args.steps // rounds))
        plain, fast = (statistics.median(times[f]) for f in (False, True))
        timed = len(times[False])  # rounds x (steps // rounds), at least one per round
        rows.append(f"| {label}, {queries} queries per class | {plain:.3f} | {fast:.3f} "
                    f"| {plain / fast:.2f}x |")
        print(rows[-1], flush=True)
    table = "\n".join(rows)
    text = "\n".join([
        "# ProtoNet training step on CPU: `fast=True` against the module's forward", "",
        "- command: `python benchmarks/protonet_step.py "
        + " ".join(sys.argv[1:] if argv is None else argv) + "`",
        f"- commit: `{commit}`" + (" (with uncommitted changes)" if dirty else " (clean)"),
        f"- machine: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{args.threads} thread(s)",
        f"- load before / after: {load_before} / {sh('cat /proc/loadavg')}",
        f"- wall: {time.time() - wall:.0f} s; median of {timed} timed steps per cell "
        "(Conv4, Adam, forward + backward + update)", "", table, ""])
    if args.write:
        atomic_write(REPO / "benchmarks" / "results" / "protonet_step.md",
                     lambda tmp: tmp.write_text(text))
    return text


if __name__ == "__main__":
    print(main())
