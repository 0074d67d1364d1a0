"""Omniglot 5-way 1-shot accuracy within a CPU wall-clock budget: MAML and ProtoNets.

Protocol (the same as the plain baselines of the project notes, so the numbers compare):
train on Lake's 964 background characters, each at 0/90/180/270 degrees as its own class
(3,856 classes); score on the same 400 seeded 5-way 1-shot episodes (15 queries per class)
of Lake's 659 evaluation characters. 28x28 images, float32, ``torch.set_num_threads(2)``.

* MAML, second order, mlbook's fast path (tasks split over 2 threads): Conv4 with batch
  statistics, meta-batch 8, inner lr 0.4, 1 inner step in training and 3 at test (10 also
  reported), Adam 2e-3.
* Prototypical Networks: Conv4 encoder (64-d), 60-way 1-shot training episodes with 5 queries
  per class (Snell et al.'s Omniglot setting), Adam 1e-3.

The budget counts training time only (validation excluded). The learning curve is scored
on 100 other fixed episodes of the evaluation characters (seed 1); it is only a curve, no
model selection: the weights at the end of the budget are scored on the test episodes.
Weights go to ``mlbook.cache_dir("meta")`` (not to git). Results:
``benchmarks/results/omniglot_cpu_budget.{json,md}``.

Run: ``MLBOOK_DATA=... python benchmarks/omniglot_cpu_budget.py [--maml-minutes 10]
[--proto-minutes 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from _provenance import cpu_model, sh  # benchmarks/ is on sys.path when run

import mlbook
from mlbook.data import EpisodeSampler, fixed_episodes, lake_split, rotate_classes
from mlbook.meta import MAML, ProtoNet, evaluate, meta_train
from mlbook.models import Conv4

RESULTS = Path(__file__).resolve().parent / "results"


def curve(history) -> list[dict]:
    return [
        {"step": int(s), "train_minutes": round(t / 60, 3), "val_acc": round(a, 4),
         "val_ci95": round(c, 4)}
        for s, t, a, c in zip(history["val_step"], history["val_time_s"], history["val_acc"],
                              history["val_ci95"], strict=True)
    ]


def run_maml(train, val, test, minutes, args) -> dict:
    mlbook.seed_everything(0)
    model = Conv4(1, 64, num_classes=5, track_running_stats=False)
    learner = MAML(model, inner_lr=0.4, inner_steps=1, first_order=False, threads=2)
    opt = torch.optim.Adam(learner.parameters(), lr=args.maml_lr)
    sampler = EpisodeSampler(train, 5, 1, 15, num_tasks=args.maml_batch, seed=0)
    ckpt = mlbook.cache_dir("meta") / "maml_omniglot_cpu_budget.pt"
    ckpt.unlink(missing_ok=True)  # a fresh run, not a resume
    start = time.time()
    hist = meta_train(learner, sampler, opt, time_budget_s=60 * minutes, val_episodes=val,
                      eval_every=args.maml_eval_every, eval_steps=3, checkpoint=ckpt,
                      progress=False)
    wall = time.time() - start
    acc3, ci3 = evaluate(learner, test, batch_size=50, steps=3)
    print(f"MAML test (3 steps): {100 * acc3:.2f} +- {100 * ci3:.2f}%", flush=True)
    acc10, ci10 = evaluate(learner, test, batch_size=50, steps=10)
    print(f"MAML test (10 steps): {100 * acc10:.2f} +- {100 * ci10:.2f}%", flush=True)
    return {
        "method": "MAML second order (mlbook fast path, 2 task threads)",
        "settings": {"meta_batch": args.maml_batch, "inner_lr": 0.4, "inner_steps_train": 1,
                     "inner_steps_test": 3, "outer": f"Adam lr {args.maml_lr}",
                     "train_episodes": "5-way 1-shot, 15 queries per class"},
        "budget_minutes": minutes, "iterations": len(hist["step"]),
        "train_seconds": round(hist.last("train_time_s"), 1), "wall_seconds": round(wall, 1),
        "test_acc": round(acc3, 4), "test_ci95": round(ci3, 4),
        "test_acc_10_steps": round(acc10, 4), "test_ci95_10_steps": round(ci10, 4),
        "curve": curve(hist), "weights": str(ckpt),
    }


def run_proto(train, val, test, minutes, args) -> dict:
    mlbook.seed_everything(0)
    net = ProtoNet(Conv4(1, 64, num_classes=None))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sampler = EpisodeSampler(train, args.proto_way, 1, 5, num_tasks=1, seed=0)
    ckpt = mlbook.cache_dir("meta") / "protonet_omniglot_cpu_budget.pt"
    ckpt.unlink(missing_ok=True)
    start = time.time()
    hist = meta_train(net, sampler, opt, time_budget_s=60 * minutes, val_episodes=val,
                      eval_every=args.proto_eval_every, checkpoint=ckpt, progress=False)
    wall = time.time() - start
    acc, ci = evaluate(net, test, batch_size=50)
    print(f"ProtoNets test: {100 * acc:.2f} +- {100 * ci:.2f}%", flush=True)
    return {
        "method": "Prototypical Networks",
        "settings": {"train_episodes": f"{args.proto_way}-way 1-shot, 5 queries per class",
                     "outer": "Adam lr 0.001"},
        "budget_minutes": minutes, "iterations": len(hist["step"]),
        "train_seconds": round(hist.last("train_time_s"), 1), "wall_seconds": round(wall, 1),
        "test_acc": round(acc, 4), "test_ci95": round(ci, 4),
        "curve": curve(hist), "weights": str(ckpt),
    }


def write_markdown(report: dict, path: Path) -> None:
    lines = [
        "# Omniglot 5-way 1-shot within a CPU budget (MAML, ProtoNets)", "",
        f"- command: `{report['command']}`",
        f"- commit: `{report['commit']}`",
        f"- machine: {report['machine']}, torch {report['torch']}, "
        f"{report['threads']} threads",
        f"- load (`uptime`) before: `{report['uptime_before']}`",
        f"- load (`uptime`) after: `{report['uptime_after']}`",
        "- the machine may be shared with other jobs (see the load before and after); "
        "budgets are wall-clock training time, so a busy machine means fewer iterations.",
        f"- protocol: {report['protocol']}", "",
        f"| method | budget | iterations | 5-way 1-shot test accuracy "
        f"({report['test_episodes']} episodes) |",
        "|---|---|---:|---:|",
    ]
    for r in report["runs"]:
        extra = ""
        if "test_acc_10_steps" in r:
            extra = (f" (10 test steps: {100 * r['test_acc_10_steps']:.1f} ± "
                     f"{100 * r['test_ci95_10_steps']:.1f}%)")
        lines.append(f"| {r['method']} | {r['budget_minutes']} min | {r['iterations']} | "
                     f"{100 * r['test_acc']:.1f} ± {100 * r['test_ci95']:.1f}%{extra} |")
    for r in report["runs"]:
        lines += ["", f"## {r['method']}: learning curve", "",
                  f"settings: {json.dumps(r['settings'])}", "",
                  "| step | training minutes | validation accuracy (100 episodes) |",
                  "|---:|---:|---:|"]
        lines += [f"| {c['step']} | {c['train_minutes']:.2f} | "
                  f"{100 * c['val_acc']:.1f} ± {100 * c['val_ci95']:.1f}% |" for c in r["curve"]]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--maml-minutes", type=float, default=10.0)
    parser.add_argument("--proto-minutes", type=float, default=5.0)
    parser.add_argument("--maml-batch", type=int, default=8)
    parser.add_argument("--maml-lr", type=float, default=2e-3)
    parser.add_argument("--maml-eval-every", type=int, default=25)
    parser.add_argument("--proto-way", type=int, default=60)
    parser.add_argument("--proto-eval-every", type=int, default=25)
    parser.add_argument("--test-episodes", type=int, default=400)
    parser.add_argument("--only", choices=["maml", "proto"], default=None)
    parser.add_argument("--out", type=Path, default=RESULTS / "omniglot_cpu_budget")
    args = parser.parse_args()
    torch.set_num_threads(2)

    report = {
        "command": "python " + " ".join(sys.argv),
        "commit": sh("git rev-parse HEAD"),
        "machine": cpu_model(),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "uptime_before": sh("uptime"), "test_episodes": args.test_episodes,
        "protocol": ("train: Lake background (964 characters x 4 rotations = 3856 classes); "
                     f"test: {args.test_episodes} fixed 5-way 1-shot episodes, 15 queries per "
                     "class, of Lake's 659 evaluation characters (fixed_episodes seed 0); "
                     "curve: 100 other evaluation-set episodes (seed 1), no model selection; "
                     "28x28, float32"),
    }
    background, evaluation = lake_split(28)
    train = rotate_classes(background)
    test = fixed_episodes(evaluation, 5, 1, 15, num_tasks=args.test_episodes, seed=0)
    val = fixed_episodes(evaluation, 5, 1, 15, num_tasks=100, seed=1)
    runs = []
    if args.only in (None, "maml"):
        runs.append(run_maml(train, val, test, args.maml_minutes, args))
    if args.only in (None, "proto"):
        runs.append(run_proto(train, val, test, args.proto_minutes, args))
    report["runs"] = runs
    report["uptime_after"] = sh("uptime")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    write_markdown(report, args.out.with_suffix(".md"))
    print(json.dumps({r["method"]: [r["test_acc"], r["test_ci95"], r["iterations"]]
                      for r in runs}))


if __name__ == "__main__":
    os.environ.setdefault("MLBOOK_QUIET", "1")
    main()
