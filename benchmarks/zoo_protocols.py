"""Score every zoo model under two test protocols: 423 unrotated test characters, and the
papers' 1,692 test classes (the 423 characters at 0, 90, 180 and 270 degrees).

Run from a clean commit (the commit goes into the record), on one thread::

    MLBOOK_DATA=... python benchmarks/zoo_protocols.py [--only NAME ...] [--episodes N]

Each model (:func:`mlbook.zoo.available`) is scored by ``train_zoo.py``'s own
:func:`train_zoo.test_scores`, the code that wrote its record: seeded episodes (seed 0; 600
per setting, Reptile's 200, i.e. the record's ``test_episodes``), 15 queries per class, the
record's test settings and test-time inner steps. Under the unrotated protocol the scores
therefore reproduce the record (``matches_record`` says whether they do, digit for digit).
The test characters of a split are the same under both protocols; only the rotations are
added, each rotation its own class (:func:`mlbook.data.omniglot_standard_split` with
``rotate_test=True``; for the Lake split, Lake's 659 evaluation characters x 4).

Results are merged into ``benchmarks/results/zoo_protocols.json`` (one entry a model, each
with its own provenance: command, commit, machine, torch, threads, load before/after, wall
time; and the sha256 of the weights it scored, so a retrained model shows as stale), written
after every model; ``zoo_protocols.md`` is then rendered from that file. ``--pending NAME``
records a model as not yet scored (with ``--pending-note`` saying why) instead of scoring it;
given without ``--only``, nothing else is scored.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import torch
from _provenance import REPO, cpu_model, sh  # benchmarks/ is on sys.path when run
from train_zoo import TEST_EPISODES, TEST_QUERIES, test_scores

import mlbook
from mlbook import zoo
from mlbook._io import atomic_write
from mlbook.data import lake_split, omniglot_standard_split, rotate_classes

RESULTS = REPO / "benchmarks" / "results" / "zoo_protocols.json"
PROTOCOLS = {
    "unrotated": "the split's test characters, unrotated (standard split: 423 classes; Lake "
                 "split: 659); mlbook's default, and Nichol et al.'s Reptile code",
    "rotated": "the same characters at 0/90/180/270 degrees, each rotation its own class "
               "(standard split: 1,692 classes; Lake split: 2,636); Snell et al. 2017 "
               "(section 3.1) and Finn et al. 2017's code",
}


def test_characters(split: str) -> dict[str, torch.Tensor]:
    """The test classes of a zoo split under each protocol."""
    if split == "standard":
        return {"unrotated": omniglot_standard_split(28)[1],
                "rotated": omniglot_standard_split(28, rotate_test=True)[1]}
    evaluation = lake_split(28)[1]
    return {"unrotated": evaluation, "rotated": rotate_classes(evaluation)}


def settings_of(meta: dict) -> list[list[int]]:
    """The (ways, shots) a model's record was tested on, e.g. ``"20w5s"`` -> ``[20, 5]``."""
    settings = []
    for key in meta["test"]:
        if key.endswith("s") and "w" in key:
            ways, shots = key[:-1].split("w")
            settings.append([int(ways), int(shots)])
    return settings


def provenance() -> dict:
    """Commit, clean or not (this script's own results excepted), machine, load."""
    return {"commit": sh("git rev-parse HEAD"),
            "dirty": bool(sh("git status --porcelain -- mlbook benchmarks "
                            "':!benchmarks/zoo_runs' ':!benchmarks/results/zoo' "
                            "':!benchmarks/results/zoo_protocols.json' "
                            "':!benchmarks/results/zoo_protocols.md'")),
            "machine": f"{cpu_model()}, {os.cpu_count()} cores",
            "torch": torch.__version__,
            "load": sh("cat /proc/loadavg")}


def score_model(name: str, episodes: int | None, data: dict[str, dict]) -> dict:
    """Both protocols' scores of zoo model ``name`` (``episodes`` per setting, default the
    record's), with the time each took."""
    meta = zoo.info(name)
    count = episodes if episodes is not None else meta.get("test_episodes", TEST_EPISODES)
    recipe = {"tests": settings_of(meta), "split": meta["split"]}
    if meta["split"] not in data:
        data[meta["split"]] = test_characters(meta["split"])
    entry: dict = {"status": "done", "method": meta["method"], "split": meta["split"],
                   "sha256": meta["sha256"], "test_episodes": count,
                   "test_queries_per_class": TEST_QUERIES, "inner_steps": meta["inner_steps"]}
    seconds, classes = {}, {}
    for protocol, test in data[meta["split"]].items():
        mlbook.seed_everything(0)
        learner = zoo.load(name)
        print(f"{name}, {protocol} ({test.shape[0]} test classes):", flush=True)
        start = time.time()
        scores = test_scores(learner, recipe, test, meta["inner_steps"], count)
        seconds[protocol] = round(time.time() - start, 1)
        if protocol == "rotated":  # Lake's 20 runs are the same under both protocols
            scores.pop("lake_runs_error", None)
        entry[protocol], classes[protocol] = scores, test.shape[0]
    entry["test_classes"], entry["seconds"] = classes, seconds
    if count == meta.get("test_episodes", TEST_EPISODES):
        entry["matches_record"] = all(entry["unrotated"][k] == v for k, v in meta["test"].items())
    return entry


def load_results(path: Path) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    return {"description": __doc__.split("\n\n")[0], "protocols": PROTOCOLS,
            "test_queries_per_class": TEST_QUERIES, "models": {}}


def save(results: dict, path: Path) -> None:
    """Write the JSON, then render the markdown from the file just written."""
    results["models"] = dict(sorted(results["models"].items()))
    text = json.dumps(results, indent=1) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))
    rendered = markdown(json.loads(path.read_text()))
    atomic_write(path.with_suffix(".md"), lambda tmp: tmp.write_text(rendered))


def markdown(results: dict) -> str:
    """The results file as a page: one row per model and setting, then each run's provenance."""
    index = {name: zoo.info(name) for name in zoo.available()}
    lines = ["# Zoo models under two test protocols", "",
             f"Generated from `zoo_protocols.json` by `benchmarks/zoo_protocols.py`. "
             f"{results['test_queries_per_class']} queries per class, seeded episodes "
             "(seed 0), mean ± 95% interval; the models' batch norm as in their records "
             "(ProtoNet-type models: running statistics; MAML family and Reptile: statistics "
             "of the episode's batch, i.e. transductive).", "",
             *[f"- **{key}**: {text}" for key, text in results["protocols"].items()], "",
             "| model | setting | episodes | unrotated (%) | rotated (%) | difference "
             "(points) | reproduces the record |", "|---|---|---:|---:|---:|---:|---|"]
    for name, entry in results["models"].items():
        if entry["status"] != "done":
            lines.append(f"| `{name}` | pending: {entry.get('note', '')} | | | | | |")
            continue
        stale = name not in index or index[name]["sha256"] != entry["sha256"]
        label = f"`{name}`" + (" (stale: the zoo's weights changed since)" if stale else "")
        for key, value in entry["unrotated"].items():
            if not isinstance(value, dict):
                lines.append(f"| {label} | Lake's 20 runs (error) | 20 | {100 * value:.2f} | | | |")
                continue
            rotated = entry["rotated"][key]
            match = {True: "yes", False: "no"}.get(entry.get("matches_record"), "-")
            lines.append(
                f"| {label} | {key} | {entry['test_episodes']} | {100 * value['acc']:.2f} ± "
                f"{100 * value['ci95']:.2f} | {100 * rotated['acc']:.2f} ± "
                f"{100 * rotated['ci95']:.2f} | {100 * (rotated['acc'] - value['acc']):+.2f} "
                f"| {match} |")
    lines += ["", "## Provenance", "",
              "| model | command | commit | machine | torch | threads | load before / after "
              "| wall (s) |", "|---|---|---|---|---|---|---|---:|"]
    for name, entry in results["models"].items():
        p = entry.get("provenance")
        if p:
            commit = p["commit"][:12] + (" (uncommitted changes)" if p["dirty"] else " (clean)")
            lines.append(f"| `{name}` | `{p['command']}` | {commit} | {p['machine']} | "
                         f"{p['torch']} | {p['threads']} | {p['load_before']} / "
                         f"{p['load_after']} | {p['wall_seconds']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="score only these models")
    parser.add_argument("--episodes", type=int, default=None,
                        help="episodes per setting (default: each record's, 600 or 200)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pending", nargs="+", metavar="NAME", default=[],
                        help="record these models as pending instead of scoring them")
    parser.add_argument("--pending-note", default="not scored yet",
                        help="why the --pending models are pending (goes into the record)")
    parser.add_argument("--out", type=Path, default=RESULTS,
                        help="results file to merge into (the .md is written beside it)")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="run with uncommitted changes (the record says so)")
    args = parser.parse_args(argv)
    known = zoo.available()
    for name in [*(args.only or []), *args.pending]:
        if name not in known:
            parser.error(f"no zoo model named {name!r}; available: {known}")
    if args.episodes is not None and args.episodes < 1:
        parser.error(f"--episodes must be at least 1, got {args.episodes}")
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    start_state = provenance()
    if start_state["dirty"] and not args.allow_dirty:
        sys.exit("uncommitted changes under mlbook/ or benchmarks/: commit first (the record "
                 "names the commit), or pass --allow-dirty for a trial run")
    torch.set_num_threads(args.threads)
    command = "python benchmarks/zoo_protocols.py " + shlex.join(
        argv if argv is not None else sys.argv[1:])
    results = load_results(args.out)
    for name in args.pending:
        results["models"][name] = {"status": "pending", "note": args.pending_note,
                                   "sha256": zoo.info(name)["sha256"]}
    data: dict[str, dict] = {}
    # --pending alone records the pending models and scores nothing else
    to_score = args.only or ([] if args.pending else known)
    for name in [n for n in to_score if n not in args.pending]:
        before, start = provenance(), time.time()
        entry = score_model(name, args.episodes, data)
        after = provenance()
        entry["provenance"] = {"command": command, "commit": before["commit"],
                               "dirty": before["dirty"], "machine": before["machine"],
                               "torch": before["torch"], "threads": torch.get_num_threads(),
                               "load_before": before["load"], "load_after": after["load"],
                               "wall_seconds": round(time.time() - start, 1)}
        results["models"][name] = entry
        save(results, args.out)  # after every model: a long run keeps what it has done
    save(results, args.out)
    return results


if __name__ == "__main__":
    main()
