"""Seconds per training step of the learners that embed once: ProtoNets and the in-context
learner, ``fast=True`` against the module's own forward, and the fraction of the machine's
floor that each reaches.

The zoo's ProtoNets train on 60-way episodes with 5 queries per class, 1 or 5 shots (360 or
600 drawings of 28x28 per step) through ``Conv4``; its in-context learner (``icl-5w1s``)
trains on 8 tasks of 5-way 1-shot with 5 queries per class, a ``Conv4`` embedding and a
4-layer transformer of width 128. This times one full step (forward, backward, Adam) both
ways, alternating the two in rounds so that a change of machine load hits both, and reports
the medians and their ratio. ``fast=False`` calls ``encoder(x)``: it is the plain loop a
reader would write, the yardstick. The floor is the step's FLOPs (``torch.utils.flop_counter``
on the plain step) at the rates this machine measures for the dominant convolution and for a
matrix product of the transformer's shape (best of the measurements before and after)::

    python benchmarks/protonet_step.py [--threads 1] [--steps 20] [--write]

``--write`` writes ``benchmarks/results/protonet_step.json`` (the record, with command,
commit, machine, ISA flags, load before/after and wall time) and renders
``protonet_step.md`` from it. The drawings are random: a step's cost does not depend on what
is drawn. That both ways compute the same training is a unit test
(``tests/test_meta_protonets.py``, ``tests/test_meta_in_context.py``), not measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch
from _hardware import conv_gflops, flops_by_kind, isa_flags, matmul_gflops
from _provenance import REPO, cpu_model, sh  # benchmarks/ is on sys.path when run

from mlbook._io import atomic_write
from mlbook.data import Episode
from mlbook.meta import InContextLearner, ProtoNet
from mlbook.models import Conv4

RESULTS = REPO / "benchmarks" / "results"


def protonet(fast: bool) -> ProtoNet:
    torch.manual_seed(0)
    return ProtoNet(Conv4(1, 64, num_classes=None, image_size=28), fast=fast)


def in_context(fast: bool) -> InContextLearner:
    torch.manual_seed(0)  # the zoo's icl-5w1s architecture (mlbook.zoo.build_learner)
    return InContextLearner(Conv4(1, 64, num_classes=None, image_size=28), feature_dim=64,
                            n_way=5, d_model=128, num_layers=4, num_heads=4, fast=fast)


#: label -> (learner factory, n_way, k_shot, queries per class, tasks per step)
SETTINGS: dict[str, tuple[Callable[[bool], torch.nn.Module], int, int, int, int]] = {
    "60-way 1-shot, 5 queries per class (ProtoNet)": (protonet, 60, 1, 5, 1),
    "60-way 5-shot, 5 queries per class (ProtoNet)": (protonet, 60, 5, 5, 1),
    "8 tasks of 5-way 1-shot, 5 queries per class (in-context)": (in_context, 5, 1, 5, 8),
}


def random_episode(n_way: int, k_shot: int, queries: int, tasks: int,
                   generator: torch.Generator) -> Episode:
    def images(per_class: int) -> torch.Tensor:
        return torch.rand(tasks, n_way * per_class, 1, 28, 28, generator=generator)

    def labels(per_class: int) -> torch.Tensor:
        return torch.arange(n_way).repeat_interleave(per_class).expand(tasks, -1).clone()

    return Episode(images(k_shot), labels(k_shot), images(queries), labels(queries))


def time_steps(net: torch.nn.Module, episode: Episode, steps: int) -> list[float]:
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        optimizer.zero_grad()
        net.meta_loss(episode)[0].backward()
        optimizer.step()
        seconds.append(time.perf_counter() - start)
    return seconds


def render(record: dict) -> str:
    """The Markdown page of a record written by :func:`main`."""
    rows = ["| episode | fast=False (s) | fast=True (s) | speed-up | GFLOP per step | floor (s) "
            "| fast=True: fraction of the floor |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in record["rows"]:
        rows.append(f"| {r['episode']} | {r['plain_s']:.3f} | {r['fast_s']:.3f} "
                    f"| {r['plain_s'] / r['fast_s']:.2f}x | {r['gflop']:.1f} "
                    f"| {r['floor_s']:.3f} | {100 * r['floor_s'] / r['fast_s']:.0f}% |")
    return "\n".join([
        "# Training step of ProtoNets and the in-context learner on CPU: `fast=True` against "
        "the module's forward", "",
        f"- command: `{record['command']}`",
        f"- commit: `{record['commit']}`" + (" (with uncommitted changes)" if record["dirty"]
                                             else " (clean)"),
        f"- machine: {record['cpu']}, {record['cores']} cores, torch {record['torch']}, "
        f"{record['threads']} thread(s); ISA flags {', '.join(record['isa_flags']) or 'unknown'}",
        f"- load before / after: {record['load_before']} / {record['load_after']}",
        f"- wall: {record['wall_s']:.0f} s; median of {record['timed_steps']} timed steps per "
        "cell (forward + backward + Adam)",
        f"- the floor: the plain step's FLOPs at {record['conv_gflops']:.0f} GFLOP/s for "
        f"convolutions (the dominant Conv4 convolution, measured) and "
        f"{record['matmul_gflops']:.0f} GFLOP/s for matrix products (a 240x128 by 128x512 "
        f"product, measured), on {record['threads']} thread(s)", "",
        *rows, ""])


def main(argv: list[str] | None = None) -> dict:
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
    conv_rates = [conv_gflops(threads=args.threads)]
    matmul_rates = [matmul_gflops(threads=args.threads)]
    rounds, rows, timed = 4, [], 0
    for label, (factory, n_way, k_shot, queries, tasks) in SETTINGS.items():
        nets = {fast: factory(fast).train() for fast in (False, True)}
        episode = random_episode(n_way, k_shot, queries, tasks,
                                 torch.Generator().manual_seed(0))
        counted = factory(False).train()
        flops = flops_by_kind(lambda net=counted, ep=episode: net.meta_loss(ep)[0].backward())
        times: dict[bool, list[float]] = {False: [], True: []}
        for net in nets.values():
            time_steps(net, episode, 2)  # warm-up
        for _ in range(rounds):  # alternate, so that a change of load hits both
            for fast, net in nets.items():
                times[fast] += time_steps(net, episode, max(1, args.steps // rounds))
        timed = len(times[False])
        rows.append({"episode": label, "plain_s": statistics.median(times[False]),
                     "fast_s": statistics.median(times[True]),
                     "conv_gflop": flops["conv"] / 1e9, "matmul_gflop": flops["matmul"] / 1e9,
                     "gflop": (flops["conv"] + flops["matmul"]) / 1e9})
        print(label, f"{rows[-1]['plain_s']:.3f} s / {rows[-1]['fast_s']:.3f} s", flush=True)
    conv_rates.append(conv_gflops(threads=args.threads))
    matmul_rates.append(matmul_gflops(threads=args.threads))
    conv_rate, matmul_rate = max(conv_rates), max(matmul_rates)
    for row in rows:
        row["floor_s"] = row["conv_gflop"] / conv_rate + row["matmul_gflop"] / matmul_rate
        row["fraction_of_floor"] = row["floor_s"] / row["fast_s"]
    record = {
        "command": "python benchmarks/protonet_step.py "
                   + " ".join(sys.argv[1:] if argv is None else argv),
        "commit": commit, "dirty": dirty, "cpu": cpu_model(), "cores": os.cpu_count(),
        "torch": torch.__version__, "threads": args.threads, "isa_flags": isa_flags(),
        "load_before": load_before, "load_after": sh("cat /proc/loadavg"),
        "wall_s": time.time() - wall, "timed_steps": timed,
        "conv_gflops": conv_rate, "conv_gflops_samples": conv_rates,
        "matmul_gflops": matmul_rate, "matmul_gflops_samples": matmul_rates, "rows": rows}
    text = render(record)
    if args.write:
        atomic_write(RESULTS / "protonet_step.json",
                     lambda tmp: tmp.write_text(json.dumps(record, indent=1) + "\n"))
        atomic_write(RESULTS / "protonet_step.md", lambda tmp: tmp.write_text(text))
    print(text)
    return record


if __name__ == "__main__":
    main()
