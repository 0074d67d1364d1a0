"""Few-shot Omniglot on a CPU budget: MAML, first-order MAML, ANIL, ProtoNets and a transfer
baseline, trained for fixed numbers of iterations and scored on the same seeded test episodes.

What it measures
----------------
* **Standard split** (Vinyals et al. 2016; :func:`mlbook.data.omniglot_standard_split`, seed
  0): 1,200 training characters x 4 rotations = 4,800 training classes, 423 test characters.
  Every method is trained on the training classes for an *iteration* budget (reproducible,
  unlike a wall-clock budget; the wall time is recorded too) and scored on the same
  ``--eval-tasks`` test episodes (``fixed_episodes(test, N, K, 15, T, seed=EVAL_SEED)``),
  reported as mean accuracy with its 95% interval over episodes.
* **Lake's 20 one-shot runs** (Lake et al. 2015): 20-way 1-shot error rate against people
  (4.5%). The runs use characters of Lake's *evaluation* set, and the standard split pools
  both of Lake's sets, so ~3/4 of the run characters are among the standard training
  classes. For the runs, ProtoNets and the transfer baseline are therefore trained again,
  on Lake's 964 *background* characters (x 4 rotations) only.
* A floor that learns nothing: nearest centroid on raw pixels.

Methods
-------
``maml`` (second order), ``fomaml``, ``anil`` (:class:`mlbook.meta.MAML`, Conv4 with
batch statistics, inner lr 0.4, 1 inner step in training and 3 at test time as in Finn et
al. 2017 for 5-way Omniglot, but meta-batches of 16 tasks rather than 32, one query per
class as in their code); ``protonet`` (:class:`mlbook.meta.ProtoNet` on a Conv4 encoder,
5 queries per class as Snell et al. 2017, but 5-way rather than 60-way training episodes,
2 per step); ``transfer`` (Conv4 trained as an ordinary 4,800-way classifier with
:func:`mlbook.transfer.fit`, then nearest centroid and a logistic-regression probe on each
episode's support embeddings, Tian et al. 2020). Outer optimizer Adam, lr 1e-3, for all.

Usage
-----
    MLBOOK_DATA=/path/to/data nohup .venv/bin/python benchmarks/fewshot_omniglot.py \
        > benchmarks/results/fewshot_omniglot.log 2>&1 &

``--quick`` runs a few iterations of everything (a smoke test, a minute or two);
``--scale 4`` multiplies every iteration budget by 4. Results are rewritten after every
method to ``benchmarks/results/fewshot_omniglot.{json,md}`` (``--out`` changes the stem).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _provenance import REPO, cpu_model, sh  # benchmarks/ is on sys.path when run

import mlbook
from mlbook.data import (
    BPL_ERROR,
    CONVNET_ERROR,
    HUMAN_ERROR,
    EpisodeSampler,
    fixed_episodes,
    lake_split,
    load_one_shot_runs,
    omniglot_standard_split,
    rotate_classes,
    score_one_shot_runs,
)
from mlbook.loops import mean_confidence_interval
from mlbook.meta import MAML, ProtoNet, episode_scores, meta_train
from mlbook.models import Conv4
from mlbook.transfer import PrototypeClassifier, extract_features, fit, linear_probe

EVAL_SEED = 2017  # seed of the test episodes every method is scored on
EVAL_QUERIES = 15  # query images per class in test episodes (as in the papers)
OUTER_LR = 1e-3

#: Published accuracies (%) on the standard split, 95% intervals where the paper gives them.
PUBLISHED = {
    "MAML (Finn et al. 2017)": {"5w1s": 98.7, "5w5s": 99.9, "20w1s": 95.8, "20w5s": 98.9},
    "ProtoNets (Snell et al. 2017)": {"5w1s": 98.8, "5w5s": 99.7, "20w1s": 96.0, "20w5s": 98.9},
}

#: Per setting: (n_way, k_shot) and per method the training budget.
SETTINGS: dict[str, tuple[int, int]] = {"5w1s": (5, 1), "5w5s": (5, 5), "20w1s": (20, 1)}

#: Iteration budgets for 5-way 1-shot (scaled by --scale). Chosen from measured speed so that
#: the whole script takes about 30 minutes on 2 shared CPU cores (see the results file).
BUDGET: dict[str, dict[str, int]] = {
    "maml": {"steps": 150, "meta_batch": 16, "train_queries": 1},
    "fomaml": {"steps": 150, "meta_batch": 16, "train_queries": 1},
    "anil": {"steps": 150, "meta_batch": 16, "train_queries": 1},
    "protonet": {"steps": 200, "meta_batch": 2, "train_queries": 5},
    "transfer": {"steps": 200, "batch_size": 64},
}
#: Lake's runs: ProtoNets on 20-way 1-shot episodes and the transfer baseline, background set.
LAKE_BUDGET: dict[str, dict[str, int]] = {
    "protonet": {"steps": 100, "meta_batch": 1, "train_queries": 5, "n_way": 20},
    "transfer": {"steps": 200, "batch_size": 64},
}


# ----------------------------------------------------------------------------- helpers
def run_info() -> dict[str, Any]:
    """Commit, machine, load and software versions, for the results file."""
    cpu = cpu_model()
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "commit": sh("git rev-parse HEAD"),
        "dirty_files": [ln[3:] for ln in sh("git status --porcelain").splitlines()
                        if ln[3:].startswith("mlbook/")],
        "machine": f"{cpu}, {os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}",
        "device": str(mlbook.device()),
        "load_average_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "started_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def summary(scores: torch.Tensor) -> dict[str, float]:
    """Mean accuracy and 95% half-width in percent, from per-episode accuracies in [0, 1]."""
    mean, ci = mean_confidence_interval((100.0 * scores.double()).tolist())
    return {"acc": round(mean, 3), "ci95": round(ci, 3), "episodes": int(scores.numel())}


def class_tensors(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[C, E, 1, S, S]`` per-class images -> (``x [C*E, 1, S, S]``, labels ``[C*E]``)."""
    c, e = images.shape[:2]
    return images.flatten(0, 1), torch.arange(c).repeat_interleave(e)


# ----------------------------------------------------------------------------- methods
def make_meta_learner(method: str, n_way: int) -> torch.nn.Module:
    """The learner of ``method`` for ``n_way``-way tasks (fresh Conv4, seeded by the caller)."""
    if method == "protonet":
        return ProtoNet(Conv4(num_classes=None))
    options = {"maml": {}, "fomaml": {"first_order": True}, "anil": {"adapt": "head"}}[method]
    return MAML(Conv4(num_classes=n_way, track_running_stats=False), inner_lr=0.4,
                inner_steps=1, **options)


def train_meta(method: str, train: torch.Tensor, n_way: int, k_shot: int, steps: int,
               meta_batch: int, train_queries: int, seed: int) -> tuple[torch.nn.Module, dict]:
    """Meta-train ``method`` for ``steps`` outer steps; returns the learner and a record."""
    mlbook.seed_everything(seed)
    learner = make_meta_learner(method, n_way)
    sampler = EpisodeSampler(train, n_way, k_shot, train_queries, num_tasks=meta_batch, seed=seed)
    optimizer = torch.optim.Adam(learner.parameters(), lr=OUTER_LR)
    start = time.perf_counter()
    history = meta_train(learner, sampler, optimizer, steps=steps, progress=False)
    wall = time.perf_counter() - start
    last = history["train_acc"][-20:]
    record = {"steps": steps, "meta_batch": meta_batch, "train_queries_per_class": train_queries,
              "train_way": n_way, "train_shot": k_shot, "outer_lr": OUTER_LR,
              "train_wall_s": round(wall, 1),
              "train_images_seen": steps * meta_batch * n_way * (k_shot + train_queries),
              "final_train_acc_last20": round(100 * float(np.mean(last)), 2)}
    if isinstance(learner, MAML):
        record.update(inner_lr=learner.inner_lr, inner_steps_train=learner.inner_steps,
                      first_order=learner.first_order, adapt=learner.adapt_mode)
    return learner, record


def train_transfer(train: torch.Tensor, steps: int, batch_size: int, seed: int
                   ) -> tuple[torch.nn.Module, dict]:
    """Conv4 trained as a plain classifier over all training classes; returns its backbone."""
    mlbook.seed_everything(seed)
    x, y = class_tensors(train)
    model = Conv4(num_classes=train.shape[0])
    optimizer = torch.optim.Adam(model.parameters(), lr=OUTER_LR)
    start = time.perf_counter()
    history = fit(model, (x, y), optimizer, steps=steps, batch_size=batch_size, seed=seed,
                  desc="pretrain")
    wall = time.perf_counter() - start
    record = {"steps": steps, "batch_size": batch_size, "classes": int(train.shape[0]),
              "outer_lr": OUTER_LR, "train_wall_s": round(wall, 1),
              "train_images_seen": steps * batch_size,
              "final_train_acc": round(100 * history.last("train_acc"), 2)}
    return model.features, record


def probe_scores(backbone: torch.nn.Module | None, episodes,
                 probes: dict[str, Callable[[], Any]], batch_size: int = 50
                 ) -> dict[str, torch.Tensor]:
    """Per-episode query accuracy of probes fitted on each episode's support embeddings.

    Each image is embedded once (``backbone=None`` uses the raw pixels as features: the
    no-learning floor); every probe of ``probes`` (name -> factory) is fitted per episode.
    """
    scores: dict[str, list[float]] = {name: [] for name in probes}
    for chunk in episodes.chunks(batch_size):
        t, s, q = chunk.num_tasks, chunk.support_x.shape[1], chunk.query_x.shape[1]
        images = torch.cat([chunk.support_x.flatten(0, 1), chunk.query_x.flatten(0, 1)])
        feats = images.flatten(1) if backbone is None else extract_features(backbone, images)
        fs, fq = feats[: t * s].view(t, s, -1), feats[t * s:].view(t, q, -1)
        for i in range(t):
            for name, make in probes.items():
                probe = make().fit(fs[i], chunk.support_y[i])
                scores[name].append(probe.score(fq[i], chunk.query_y[i]))
    return {name: torch.tensor(v, dtype=torch.float64) for name, v in scores.items()}


def lake_predict_protonet(learner: ProtoNet
                          ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A predictor for :func:`score_one_shot_runs`: nearest prototype (= nearest neighbour)."""

    def predict(training: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
        learner.eval()
        with torch.no_grad():
            logits = learner.predict(training, torch.arange(len(training)), test)
        return logits.argmax(1)

    return predict


def lake_predict_embedding(backbone: torch.nn.Module | None
                           ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Nearest neighbour in a fixed embedding (raw pixels when ``backbone`` is None)."""

    def predict(training: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
        feats = (torch.cat([training, test]).flatten(1) if backbone is None
                 else extract_features(backbone, torch.cat([training, test])))
        probe = PrototypeClassifier().fit(feats[: len(training)], torch.arange(len(training)))
        return torch.as_tensor(probe.predict(feats[len(training):]))

    return predict


# ----------------------------------------------------------------------------- report
def write_report(results: dict[str, Any], stem: Path) -> None:
    """Write ``stem.json`` and a human-readable ``stem.md`` (atomically enough: small files)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    info = results["run"]
    lines = [
        "# Few-shot Omniglot on a CPU budget",
        "",
        f"- command: `{info['command']}`",
        f"- commit at launch: `{info['commit']}`"
        + (f" (uncommitted package files: {', '.join(info['dirty_files'])})"
           if info["dirty_files"] else ""),
        f"- machine: {info['machine']}; device {info['device']}",
        f"- load average (1, 5, 15 min) at start: {info['load_average_at_start']}"
        + (f", at end: {info.get('load_average_at_end')}" if "load_average_at_end" in info else ""),
        f"- started {info['started_utc']}"
        + (f", total wall time {info['total_wall_s']:.0f} s" if "total_wall_s" in info else
           " (still running or interrupted)"),
        f"- test episodes: {results['eval']['episodes']} per setting, "
        f"{EVAL_QUERIES} queries per class, `fixed_episodes(test, N, K, {EVAL_QUERIES}, T, "
        f"seed={EVAL_SEED})` on the 423 test characters of `omniglot_standard_split(seed=0)`",
        "",
        "Accuracy in %, mean ± 95% interval over test episodes. Wall times are for training only.",
        "",
        "| setting | method | accuracy | training budget | train wall time (s) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for setting, methods in results["standard_split"].items():
        for name, r in methods.items():
            t = r.get("train", {})
            budget = (f"{t['steps']} steps x {t.get('meta_batch', t.get('batch_size'))}"
                      f" {'tasks' if 'meta_batch' in t else 'images'}" if t else "none")
            wall = t.get("train_wall_s", 0.0)
            lines.append(f"| {setting} | {name} | {r['acc']:.2f} ± {r['ci95']:.2f} | {budget} "
                         f"| {wall:.0f} |")
    lake = results.get("lake_runs", {})
    if lake:
        lines += ["", "## Lake's 20 one-shot runs (20-way, 1 shot), error rate in %", "",
                  "| classifier | error | trained on | train wall time (s) |",
                  "| --- | --- | --- | --- |"]
        for name, r in lake.items():
            lines.append(f"| {name} | {r['error']:.2f} | {r.get('trained_on', '')} "
                         f"| {r.get('train', {}).get('train_wall_s', 0.0):.0f} |")
    lines += ["", "Published (Lake et al. 2015): people "
              f"{100 * HUMAN_ERROR:.1f}%, BPL {100 * BPL_ERROR:.1f}%, ConvNet "
              f"{100 * CONVNET_ERROR:.1f}% error.", "",
              "Published accuracies on the standard split (full training, GPU): "
              + "; ".join(f"{k}: " + ", ".join(f"{s} {v}" for s, v in d.items())
                          for k, d in PUBLISHED.items()) + ".", ""]
    stem.with_suffix(".md").write_text("\n".join(lines))


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", default="5w1s",
                        help=f"comma-separated subset of {sorted(SETTINGS)} (default 5w1s)")
    parser.add_argument("--methods", default="maml,fomaml,anil,protonet,transfer")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply iteration budgets")
    parser.add_argument("--eval-tasks", type=int, default=300)
    parser.add_argument("--no-lake", action="store_true", help="skip Lake's one-shot runs")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny budgets")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/fewshot_omniglot"))
    args = parser.parse_args(argv)

    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [s for s in settings if s not in SETTINGS] + [m for m in methods if m not in BUDGET]
    if unknown:
        parser.error(f"unknown settings/methods {unknown}")
    if args.scale <= 0 or args.eval_tasks < 2:
        parser.error("--scale must be > 0 and --eval-tasks >= 2")
    scale = 0.02 if args.quick else args.scale
    eval_tasks = 20 if args.quick else args.eval_tasks

    def steps(n: int) -> int:
        return max(1, round(n * scale))

    t0 = time.perf_counter()
    results: dict[str, Any] = {
        "run": run_info(), "scale": scale,
        "eval": {"episodes": eval_tasks, "queries_per_class": EVAL_QUERIES, "seed": EVAL_SEED,
                 "split": "omniglot_standard_split(image_size=28, seed=0)"},
        "published": PUBLISHED,
        "lake_published_error": {"people": HUMAN_ERROR, "BPL": BPL_ERROR, "ConvNet": CONVNET_ERROR},
        "standard_split": {}, "lake_runs": {},
    }
    stem = Path(args.out)
    print(json.dumps(results["run"], indent=1), flush=True)
    train, test = omniglot_standard_split(image_size=28, seed=0)

    for setting in settings:
        n_way, k_shot = SETTINGS[setting]
        episodes = fixed_episodes(test, n_way, k_shot, EVAL_QUERIES, eval_tasks, seed=EVAL_SEED)
        table = results["standard_split"].setdefault(setting, {})
        floor = probe_scores(None, episodes, {"centroid": PrototypeClassifier})["centroid"]
        table["pixels + nearest centroid (no training)"] = summary(floor)
        for method in methods:
            b = BUDGET[method]
            start = time.perf_counter()
            if method == "transfer":
                backbone, record = train_transfer(train, steps(b["steps"]), b["batch_size"],
                                                  args.seed)
                t = time.perf_counter()
                probed = probe_scores(backbone, episodes, {"nearest centroid": PrototypeClassifier,
                                                           "linear probe": linear_probe})
                for probe_name, probe_acc in probed.items():
                    r = summary(probe_acc)
                    r.update(train=record, eval_wall_s=round(time.perf_counter() - t, 1))
                    table[f"transfer ({probe_name})"] = r
            else:
                learner, record = train_meta(method, train, n_way, k_shot, steps(b["steps"]),
                                             b["meta_batch"], b["train_queries"], args.seed)
                inner = 3 if isinstance(learner, MAML) else None
                t = time.perf_counter()
                r = summary(episode_scores(learner, episodes, batch_size=50, inner_steps=inner))
                r.update(train=record, eval_wall_s=round(time.perf_counter() - t, 1))
                if inner is not None:
                    r["inner_steps_test"] = inner
                table[method] = r
            print(f"[{time.perf_counter() - t0:7.0f} s] {setting} {method}: "
                  f"{json.dumps({k: v for k, v in table.items() if k.startswith(method)})}"
                  f" ({time.perf_counter() - start:.0f} s)", flush=True)
            write_report(results, stem)

    if not args.no_lake:
        runs = load_one_shot_runs(image_size=28)
        background, _ = lake_split(image_size=28)
        background = rotate_classes(background)
        lake = results["lake_runs"]
        lake["pixels, nearest neighbour (no training)"] = {
            "error": 100 * score_one_shot_runs(lake_predict_embedding(None), runs)}
        if "protonet" in methods:
            b = LAKE_BUDGET["protonet"]
            learner, record = train_meta("protonet", background, b["n_way"], 1, steps(b["steps"]),
                                         b["meta_batch"], b["train_queries"], args.seed)
            lake["ProtoNets"] = {"error": 100 * score_one_shot_runs(lake_predict_protonet(learner),
                                                                    runs),
                                 "trained_on": "Lake background x 4 rotations", "train": record}
            print(f"[{time.perf_counter() - t0:7.0f} s] Lake ProtoNets: {lake['ProtoNets']}",
                  flush=True)
        if "transfer" in methods:
            b = LAKE_BUDGET["transfer"]
            backbone, record = train_transfer(background, steps(b["steps"]), b["batch_size"],
                                              args.seed)
            lake["transfer (nearest neighbour)"] = {
                "error": 100 * score_one_shot_runs(lake_predict_embedding(backbone), runs),
                "trained_on": "Lake background x 4 rotations", "train": record}
            print(f"[{time.perf_counter() - t0:7.0f} s] Lake transfer: "
                  f"{lake['transfer (nearest neighbour)']}", flush=True)
        write_report(results, stem)

    results["run"]["total_wall_s"] = round(time.perf_counter() - t0, 1)
    results["run"]["load_average_at_end"] = list(os.getloadavg())
    write_report(results, stem)
    print(f"done in {results['run']['total_wall_s']:.0f} s; wrote {stem}.json and .md", flush=True)
    return results


if __name__ == "__main__":
    main()
