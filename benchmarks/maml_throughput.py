"""MAML meta-iteration throughput on a CPU: mlbook against learn2learn, higher and a plain loop.

Workload (the Omniglot setting of Finn et al. 2017): Conv4 (64 filters, batch norm with batch
statistics), 1x28x28 inputs, 5-way 1-shot, 5 support and 75 query images per task,
meta-batch 32, one inner SGD step with lr 0.4, cross-entropy, one Adam step (lr 1e-3) on
the meta-gradient. The images are random tensors of Omniglot's shape (speed does not depend
on pixel values). float32.

Timing: every contender runs in this process, alternating (one iteration each in turn), so
that load changes on a shared machine hit all of them alike; we report the median over the
timed iterations after ``--warmup`` untimed ones. Peak memory: each contender runs
``--mem-iters`` iterations in a fresh subprocess and reports its peak resident set size
(``VmHWM``, which includes the few hundred MB of the Python + torch process itself).

"mlbook NCHW" is mlbook with its CPU layout rewrites switched off
(``FunctionalModel(model, fast_layout=False)``): not a peer, it shows what the layout adds to
the task threads. Before timing, each order also checks that mlbook's meta-gradient equals the
plain loop's from the same weights (relative difference, float32, full size).

The last line printed is JSON with ``ratio_vs_fastest_peer`` per order: (median time of the
fastest peer) / (median time of mlbook); above 1 means mlbook is faster.

Run: ``python benchmarks/maml_throughput.py [--iters 5] [--warmup 1] [--markdown PATH]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _provenance import sh  # benchmarks/ is on sys.path when run

from mlbook.data import Episode
from mlbook.meta import MAML
from mlbook.meta.functional import FunctionalModel
from mlbook.models import Conv4

TASKS, WAYS, QUERIES, INNER_LR = 32, 5, 15, 0.4
LSCPU = "lscpu | grep 'Model name'"


def make_episode(seed: int = 0) -> Episode:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(WAYS)
    return Episode(
        torch.rand(TASKS, WAYS, 1, 28, 28, generator=g),
        labels.expand(TASKS, -1).contiguous(),
        torch.rand(TASKS, WAYS * QUERIES, 1, 28, 28, generator=g),
        labels.repeat_interleave(QUERIES).expand(TASKS, -1).contiguous(),
    )


def make_model(seed: int = 0) -> Conv4:
    torch.manual_seed(seed)
    return Conv4(1, 64, num_classes=WAYS, track_running_stats=False)


# Each factory returns step(episode) doing one full meta-iteration (incl. the Adam step).

def mlbook_step(first_order: bool, fast_layout: bool = True):
    model = make_model()
    learner = MAML(model, inner_lr=INNER_LR, first_order=first_order, threads=2)
    if not fast_layout:  # the same learner with the module's NCHW ops as written
        learner.fmodel = FunctionalModel(model, fast_layout=False)
    opt = torch.optim.Adam(learner.parameters(), lr=1e-3)

    def step(ep: Episode) -> None:
        loss, _ = learner.meta_loss(ep)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def plain_step(first_order: bool):
    """The textbook loop: functional_call + autograd.grad, one backward per task."""
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(ep: Episode) -> None:
        opt.zero_grad()
        plain_meta_backward(model, ep, first_order)
        opt.step()
    return step


def plain_meta_backward(model: torch.nn.Module, ep: Episode, first_order: bool) -> None:
    """Accumulate the meta-gradient into ``model``'s ``.grad``, one task at a time."""
    params = dict(model.named_parameters())
    for t in range(TASKS):
        out = torch.func.functional_call(model, params, (ep.support_x[t],))
        grads = torch.autograd.grad(F.cross_entropy(out, ep.support_y[t]),
                                    list(params.values()), create_graph=not first_order)
        phi = {n: p - INNER_LR * g for (n, p), g in zip(params.items(), grads, strict=True)}
        out = torch.func.functional_call(model, phi, (ep.query_x[t],))
        (F.cross_entropy(out, ep.query_y[t]) / TASKS).backward()


def learn2learn_step(first_order: bool):
    """learn2learn's documented recipe: MAML.clone() / adapt(), backward per task."""
    import learn2learn as l2l

    maml = l2l.algorithms.MAML(make_model(), lr=INNER_LR, first_order=first_order)
    opt = torch.optim.Adam(maml.parameters(), lr=1e-3)

    def step(ep: Episode) -> None:
        opt.zero_grad()
        for t in range(TASKS):
            learner = maml.clone()
            learner.adapt(F.cross_entropy(learner(ep.support_x[t]), ep.support_y[t]))
            (F.cross_entropy(learner(ep.query_x[t]), ep.query_y[t]) / TASKS).backward()
        opt.step()
    return step


def higher_step(first_order: bool):
    """higher's recipe (examples/maml-omniglot.py): innerloop_ctx, backward per task.

    First order: ``track_higher_grads=False`` detaches the fast weights, so the query
    gradient w.r.t. them is added to the initial weights' ``.grad`` by hand.
    """
    import higher

    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    inner_opt = torch.optim.SGD(model.parameters(), lr=INNER_LR)

    def step(ep: Episode) -> None:
        opt.zero_grad()
        for t in range(TASKS):
            with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=False,
                                      track_higher_grads=not first_order) as (fmodel, diffopt):
                diffopt.step(F.cross_entropy(fmodel(ep.support_x[t]), ep.support_y[t]))
                qloss = F.cross_entropy(fmodel(ep.query_x[t]), ep.query_y[t]) / TASKS
                if first_order:
                    grads = torch.autograd.grad(qloss, list(fmodel.parameters()))
                    for p, g in zip(model.parameters(), grads, strict=True):
                        p.grad = g if p.grad is None else p.grad + g
                else:
                    qloss.backward()
        opt.step()
    return step


def mlbook_nchw_step(first_order: bool):
    """mlbook without its CPU layout rewrites (``fast_layout=False``): not a peer, a yardstick
    for how much of mlbook's speed comes from the task threads and how much from the layout."""
    return mlbook_step(first_order, fast_layout=False)


CONTENDERS = {"mlbook": mlbook_step, "mlbook NCHW": mlbook_nchw_step, "plain loop": plain_step,
              "learn2learn": learn2learn_step, "higher": higher_step}
PACKAGES = {"learn2learn": "learn2learn", "higher": "higher"}


def available() -> list[str]:
    names = []
    for name in CONTENDERS:
        if name in PACKAGES:
            try:
                __import__(PACKAGES[name])
            except Exception as exc:  # not installed or broken: say so, skip it
                print(f"# skipping {name}: {type(exc).__name__}: {exc}", flush=True)
                continue
        names.append(name)
    return names


def peak_rss_self_mib() -> float:
    """This process's peak resident set size in MiB.

    ``VmHWM`` of ``/proc/self/status`` (Linux) belongs to this process's own address space.
    ``getrusage().ru_maxrss`` would be wrong here: after fork + exec it keeps the parent's
    high-water mark, so every child would report the benchmark driver's size.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: best effort


def child(name: str, first_order: bool, iters: int) -> None:
    """Subprocess entry: run ``iters`` iterations, print the peak RSS in MiB."""
    torch.set_num_threads(2)
    ep, step = make_episode(), CONTENDERS[name](first_order)
    for _ in range(iters):
        step(ep)
    print(peak_rss_self_mib())


def peak_rss_mib(name: str, first_order: bool, iters: int) -> float:
    cmd = [sys.executable, __file__, "--child", name, "--iters", str(iters)]
    if first_order:
        cmd.append("--first-order")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def agreement(first_order: bool, ep: Episode) -> float:
    """Relative difference ``|g_mlbook - g_plain| / |g_plain|`` of the two meta-gradients from
    the same initial weights on the same tasks (float32, at the benchmark's full size: a
    check that the fast path's threads and layout compute the same thing as the plain loop).
    Conv biases are left out: before a batch norm their gradient is zero in exact arithmetic,
    so what any implementation returns there is rounding."""
    model = make_model()
    learner = MAML(model, inner_lr=INNER_LR, first_order=first_order, threads=2)
    learner.meta_loss(ep)[0].backward()
    reference = make_model()
    plain_meta_backward(reference, ep, first_order)
    pairs = [(p.grad, q.grad) for (name, p), q in zip(model.named_parameters(),
                                                      reference.parameters(), strict=True)
             if not (name.startswith("features") and name.endswith(".0.bias"))]
    diff = torch.cat([(a - b).reshape(-1) for a, b in pairs]).norm()
    return float(diff / torch.cat([b.reshape(-1) for _, b in pairs]).norm())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iters", type=int, default=5, help="timed iterations per contender")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--mem-iters", type=int, default=2)
    parser.add_argument("--markdown", type=Path, default=None, help="write a results file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--first-order", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.first_order, args.iters)
        return

    torch.set_num_threads(2)
    uptime_before = sh("uptime")
    names = available()
    ep = make_episode()
    rows, ratios = [], {}
    for first_order in (False, True):
        order = "first" if first_order else "second"
        steps = {n: CONTENDERS[n](first_order) for n in names}
        times: dict[str, list[float]] = {n: [] for n in names}
        for i in range(args.warmup + args.iters):
            for n in names:  # alternate contenders within each round
                start = time.perf_counter()
                steps[n](ep)
                if i >= args.warmup:
                    times[n].append(time.perf_counter() - start)
        del steps
        medians = {n: statistics.median(times[n]) for n in names}
        for n in names:
            mem = peak_rss_mib(n, first_order, args.mem_iters)
            rows.append((order, n, 1000 * medians[n], [round(1000 * t) for t in times[n]], mem))
            print(f"{order:6s} order  {n:12s} median {1000 * medians[n]:8.0f} ms   "
                  f"peak RSS {mem:6.0f} MiB   runs {rows[-1][3]}", flush=True)
        peers = {n: m for n, m in medians.items() if not n.startswith("mlbook")}
        fastest = min(peers, key=peers.get)
        ratios[order] = {"ratio_vs_fastest_peer": round(peers[fastest] / medians["mlbook"], 3),
                         "fastest_peer": fastest,
                         "relative_gradient_difference_vs_plain_loop": agreement(first_order, ep)}
        print(f"{order:6s} order  mlbook's meta-gradient vs the plain loop's (float32): relative "
              f"difference {ratios[order]['relative_gradient_difference_vs_plain_loop']:.1e}",
              flush=True)

    table = ["| order | implementation | median ms / iter | peak RSS (MiB) | timed runs (ms) |",
             "|---|---|---:|---:|---|"]
    table += [f"| {o} | {n} | {m:.0f} | {mem:.0f} | {runs} |" for o, n, m, runs, mem in rows]
    print("\n".join(table))
    result = {"ratio_vs_fastest_peer": {o: r["ratio_vs_fastest_peer"] for o, r in ratios.items()},
              "fastest_peer": {o: r["fastest_peer"] for o, r in ratios.items()},
              "relative_gradient_difference_vs_plain_loop": {
                  o: float(f"{r['relative_gradient_difference_vs_plain_loop']:.2e}")
                  for o, r in ratios.items()},
              "contenders": names, "iters": args.iters, "warmup": args.warmup}
    line = json.dumps(result)
    print(line)
    if args.markdown:
        md = [
            "# MAML meta-iteration throughput on CPU (Omniglot 5-way 1-shot, meta-batch 32)", "",
            f"- command: `python {' '.join(sys.argv)}`",
            f"- commit: `{sh('git rev-parse HEAD')}`",
            f"- machine: `{sh(LSCPU)}`, torch "
            f"{torch.__version__}, 2 intra-op threads for every contender",
            f"- load before (`uptime`): `{uptime_before}`",
            f"- load after (`uptime`): `{sh('uptime')}`",
            "- the machine is shared with other jobs; contenders alternate within each round so "
            "load changes hit all of them; only ratios from one run mean anything.",
            "- workload: "
            + __doc__.split("Workload")[1].split("Timing")[0].strip().replace("\n", " "),
            "", *table, "", "```json", line, "```",
        ]
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
