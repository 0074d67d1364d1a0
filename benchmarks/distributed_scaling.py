"""Second-order MAML on one machine: 1 process x 2 threads against 2 processes x 1 thread.

Workload (Omniglot-sized, as ``maml_throughput.py``): Conv4 (64 filters, batch norm with batch
statistics), 1x28x28 inputs, 5-way 1-shot, 15 queries per class, meta-batch 32, one inner SGD
step with lr 0.4, second order, one Adam step (lr 1e-3), float32, run by
`mlbook.meta.meta_train`. The images are random tensors of Omniglot's background shape
(964 characters x 20 drawings; speed does not depend on pixel values).

Contenders, each a fresh set of processes running this file with ``--child``:

* ``1 process x 2 threads``: ``python benchmarks/distributed_scaling.py --child --threads 2``
  (MAML's two task threads, one intra-op thread each);
* ``2 processes x 1 thread``: ``python -m torch.distributed.run --nproc_per_node=2
  benchmarks/distributed_scaling.py --child --threads 1`` (gloo on 127.0.0.1; each rank
  computes 16 of the 32 tasks, one all-reduce per step).

Timing: the seconds of each step as ``meta_train`` logs them (``train_time_s``: from drawing
the meta-batch to the averaged meta-gradient, all-reduce included; under torchrun the
mean over the ranks); the first ``--warmup`` steps of every run are dropped. Contenders
alternate, ``--rounds`` runs each, so load changes on a shared machine hit both; the median
step over all rounds is reported. Process start-up (seconds for torchrun) is not a step and
is not counted.

The results also give the scaling model for ``N`` machines: the bytes all-reduced per step
(the meta-gradient, batch-norm running statistics if any, 3 numbers and one flag per
parameter tensor, in float32) against the measured compute per step.

Run: ``python benchmarks/distributed_scaling.py [--rounds 3] [--warmup 1] [--iters 3]
[--markdown benchmarks/results/distributed_scaling.md]`` from a clean commit (the results
file names it; ``--allow-dirty`` to try it out). Also writes the ``.json`` next to the
markdown file.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from _provenance import cpu_model, sh  # benchmarks/ is on sys.path when run

import mlbook
from mlbook.data import EpisodeSampler
from mlbook.meta import MAML, distributed, meta_train
from mlbook.models import Conv4

TASKS, WAYS, QUERIES, INNER_LR = 32, 5, 15, 0.4
BACKGROUND = (964, 20, 1, 28, 28)  # Omniglot's background split
SCRIPT = Path(__file__).resolve()
CONTENDERS = ("1 process x 2 threads", "2 processes x 1 thread")
# Assumed networks for the model of N machines (not measured here).
NETWORKS = {"1 Gbit/s Ethernet": (125e6, 50e-6), "10 Gbit/s Ethernet": (1.25e9, 20e-6),
            "100 Gbit/s InfiniBand": (12.5e9, 5e-6)}


def child(threads: int, steps: int) -> None:
    """One contender's run (one rank under torchrun): print the step times as JSON."""
    torch.set_num_threads(threads)
    mlbook.seed_everything(0)
    images = torch.rand(BACKGROUND, generator=torch.Generator().manual_seed(0))
    learner = MAML(Conv4(1, 64, num_classes=WAYS, track_running_stats=False),
                   inner_lr=INNER_LR, threads=threads)
    optimizer = torch.optim.Adam(learner.parameters(), lr=1e-3)
    sampler = EpisodeSampler(images, WAYS, 1, QUERIES, num_tasks=TASKS, seed=0)
    history = meta_train(learner, sampler, optimizer, steps=steps, progress=False)
    if distributed.is_main_process():
        ends = history["train_time_s"]
        parameters = [p for p in learner.parameters()]
        print(json.dumps({
            "world_size": distributed.world_size(), "threads": threads,
            "step_s": [b - a for a, b in zip([0.0, *ends[:-1]], ends, strict=True)],
            "parameters": sum(p.numel() for p in parameters),
            "parameter_tensors": len(parameters),
            "float_buffers": sum(b.numel() for b in learner.buffers() if b.is_floating_point()),
        }))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(contender: str, steps: int) -> list[str]:
    if contender == CONTENDERS[0]:
        return [sys.executable, str(SCRIPT), "--child", "--threads", "2", "--steps", str(steps)]
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
            "--master_addr=127.0.0.1", f"--master_port={free_port()}", str(SCRIPT),
            "--child", "--threads", "1", "--steps", str(steps)]


def run(contender: str, steps: int) -> dict:
    env = {**os.environ, "MLBOOK_QUIET": "1"}
    if sys.platform.startswith("linux"):
        env["GLOO_SOCKET_IFNAME"] = "lo"  # the two ranks talk over 127.0.0.1 only
    out = subprocess.run(command(contender, steps), capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{contender} failed:\n{out.stdout}\n{out.stderr}")
    return json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])


def scaling_model(step_s: float, message_bytes: int) -> list[dict]:
    """Step time on N machines like this one: compute / N plus a ring all-reduce.

    A ring all-reduce over N ranks sends and receives 2 (N - 1) / N times the message per
    rank, in 2 (N - 1) latency-bound rounds. Compute splits evenly while every machine has
    at least 2 tasks (its 2 task threads); N must divide the meta-batch.
    """
    rows = []
    for machines in (1, 2, 4, 8, 16):
        compute = step_s / machines
        row = {"machines": machines, "tasks_per_machine": TASKS // machines,
               "compute_s": compute}
        for name, (bandwidth, latency) in NETWORKS.items():
            comm = (2 * (machines - 1) / machines * message_bytes / bandwidth
                    + 2 * (machines - 1) * latency)
            row[name] = {"allreduce_s": comm, "speedup": step_s / (compute + comm)}
        rows.append(row)
    return rows


def markdown(result: dict) -> str:
    medians = result["median_step_s"]
    lines = [
        "# Meta-training on one machine: 1 process x 2 threads vs 2 processes x 1 thread", "",
        f"- command: `{result['command']}`",
        f"- commit: `{result['commit']}`{'' if result['clean'] else ' (NOT clean)'}",
        f"- machine: `{result['machine']}`, {result['cores']} cores, torch {result['torch']}",
        f"- load before (`uptime`): `{result['load_before']}`",
        f"- load after (`uptime`): `{result['load_after']}`",
        f"- wall time of the whole run: {result['wall_s']:.0f} s (torchrun start-up included)",
        "- the machine is shared with a training job and other work: contenders alternate run "
        "by run so load changes hit both; only the ratio from one run means anything.",
        "- workload: " + __doc__.split("Workload")[1].split("Contenders")[0].strip()
        .replace("\n", " "),
        "", "| contender | median s / step | meta-iterations / s | steps timed (s) |",
        "|---|---:|---:|---|",
    ]
    for name in CONTENDERS:
        steps = ", ".join(f"{s:.2f}" for s in result["step_s"][name])
        lines.append(f"| {name} | {medians[name]:.2f} | {1 / medians[name]:.3f} | {steps} |")
    lines += [
        "", f"Speed-up of 2 processes x 1 thread over 1 process x 2 threads: "
        f"**{result['speedup_2proc_vs_2threads']:.2f}x** (ratio of the medians).", "",
        "## Scaling model for N machines", "",
        f"Per step, every rank all-reduces one float32 buffer of {result['message_floats']} "
        f"numbers = **{result['message_bytes'] / 1e6:.3f} MB** ({result['parameters']} "
        "meta-parameters, plus one flag per parameter tensor and the loss, accuracy and "
        "seconds of the step). Compute per step on one machine like this one: "
        f"**{result['compute_step_s']:.2f} s** (the faster contender's median). Networks are "
        "assumptions (bandwidth, latency per message): "
        + "; ".join(f"{n} {b / 1e6:g} MB/s, {lat * 1e6:g} us" for n, (b, lat) in
                    NETWORKS.items()) + ".", "",
        "| machines | tasks / machine | compute s | "
        + " | ".join(f"all-reduce s, speed-up ({n})" for n in NETWORKS) + " |",
        "|---:|---:|---:|" + "---:|" * len(NETWORKS),
    ]
    for row in result["scaling_model"]:
        cells = " | ".join(f"{row[n]['allreduce_s']:.4f}, {row[n]['speedup']:.2f}x"
                           for n in NETWORKS)
        lines.append(f"| {row['machines']} | {row['tasks_per_machine']} | "
                     f"{row['compute_s']:.3f} | {cells} |")
    lines += ["", "```json", json.dumps({k: result[k] for k in (
        "median_step_s", "speedup_2proc_vs_2threads", "message_bytes", "compute_step_s")}),
        "```"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs of each contender")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per run")
    parser.add_argument("--iters", type=int, default=3, help="timed steps per run")
    parser.add_argument("--markdown", type=Path, default=None, help="write the results file")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="run from a modified working tree (the results say so)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.threads, args.steps)
        return

    clean = sh("git status --porcelain") == ""
    if not clean and args.markdown and not args.allow_dirty:
        sys.exit("the working tree has changes: commit first (the results file names the "
                 "commit), or pass --allow-dirty")
    commit = sh("git rev-parse HEAD")  # now: the children import this tree as it is now
    start, load_before = time.perf_counter(), sh("uptime")
    steps = args.warmup + args.iters
    times: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    info: dict = {}
    for round_ in range(args.rounds):
        for name in CONTENDERS:  # alternate, run by run
            info = run(name, steps)
            times[name] += info["step_s"][args.warmup:]
            print(f"round {round_ + 1}  {name:24s} steps (s) "
                  f"{[round(s, 2) for s in info['step_s']]}   load {sh('cat /proc/loadavg')}",
                  flush=True)
    medians = {name: statistics.median(times[name]) for name in CONTENDERS}
    floats = info["parameters"] + info["float_buffers"] + info["parameter_tensors"] + 3
    compute = min(medians.values())
    result = {
        "command": f"python {' '.join(sys.argv)}", "commit": commit,
        "clean": clean, "machine": cpu_model(), "cores": sh("nproc"), "torch": torch.__version__,
        "load_before": load_before, "load_after": sh("uptime"),
        "wall_s": time.perf_counter() - start,
        "rounds": args.rounds, "warmup": args.warmup, "iters": args.iters,
        "step_s": times, "median_step_s": medians,
        "speedup_2proc_vs_2threads": medians[CONTENDERS[0]] / medians[CONTENDERS[1]],
        "parameters": info["parameters"], "message_floats": floats,
        "message_bytes": 4 * floats, "compute_step_s": compute,
        "scaling_model": scaling_model(compute, 4 * floats),
    }
    text = markdown(result)
    print(text)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)
        args.markdown.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
