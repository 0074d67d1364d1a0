"""The README's table of the zoo's models, generated from ``mlbook/zoo/models.json`` and
``benchmarks/results/zoo_protocols.json``.

Each model's scores are given under both test protocols, each labelled: the 423 unrotated test
characters (recorded at training time) and the papers' 1,692 rotated classes (scored by
``benchmarks/zoo_protocols.py``; "pending" until that file holds a score of the shipped
weights, matched by sha256). The papers' numbers stand beside them with the protocol each
paper used, and the differences that remain (transductive batch norm) are named in the row.

Run ``python benchmarks/zoo_table.py --write`` after training a model to rewrite the table
between the ``<!-- zoo table -->`` markers of ``README.md``; without ``--write`` it prints the
table. ``tests/test_zoo.py`` checks that the README holds exactly this table, so its numbers
cannot fall behind the shipped models.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mlbook.zoo import PUBLISHED

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- zoo table -->\n", "<!-- /zoo table -->"


PROTOCOLS = REPO / "benchmarks" / "results" / "zoo_protocols.json"
#: how each method normalises at test time: the difference from the papers that remains
BATCH_NORM = {"protonet": "running statistics", "transfer": "running statistics",
              "icl": "running statistics"}


def load_protocols(path: Path = PROTOCOLS) -> dict:
    """The models of ``zoo_protocols.json`` ({} when the file is absent)."""
    return json.loads(path.read_text())["models"] if path.is_file() else {}


def _scores(test: dict) -> str:
    scores = []
    for setting, value in test.items():
        if isinstance(value, dict):
            scores.append(f"{setting} {100 * value['acc']:.2f} ± {100 * value['ci95']:.2f}")
        else:  # the Lake split's error on Lake's runs
            scores.append(f"Lake's 20 runs: {100 * value:.2f}% error")
    return "; ".join(scores)


def zoo_table(index: dict, protocols: dict | None = None) -> str:
    """Markdown table: one row per model of the index (name, method, split, steps, training
    minutes, the test scores on the unrotated test characters as recorded at training time,
    the scores under the papers' rotated protocol from ``protocols`` where they were measured
    on the shipped weights, the test-time batch norm, and the papers' numbers)."""
    protocols = protocols or {}
    rows = ["| model | method | split | steps | training minutes | unrotated test characters (%) "
            "| papers' protocol: rotated test classes (%) | test-time batch norm "
            "| published (%) |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, meta in index.items():
        episodes = meta.get("test_episodes", 600)
        note = f" ({episodes} episodes)" if episodes != 600 else ""
        scored = protocols.get(name, {})
        if scored.get("status") == "done" and scored.get("sha256") == meta.get("sha256"):
            rotated = _scores(scored["rotated"]) + (
                f" ({scored['test_episodes']} episodes)" if scored["test_episodes"] != 600 else "")
        else:
            rotated = "pending"
        published = "; ".join(
            f"{s} {paper.accuracy:g} ({paper.cited})" for s in meta["test"]
            if (paper := PUBLISHED.get((meta["method"], s)))) or "-"
        batch_norm = BATCH_NORM.get(meta["method"], "batch statistics (transductive)")
        minutes = f"{meta['train_seconds'] / 60:.0f}"
        if "init_train_seconds" in meta:  # its encoder started from another zoo model
            minutes += f" + {meta['init_train_seconds'] / 60:.0f} (`{meta['init_encoder']}`)"
        rows.append(f"| `{name}` | {meta['method']} | {meta['split']} | {meta['steps']:,} | "
                    f"{minutes} | {_scores(meta['test'])}{note} | {rotated} | {batch_norm} "
                    f"| {published} |")
    return "\n".join(rows) + "\n"


def readme_with_table(readme: str, table: str) -> str:
    """``readme`` with the text between the markers replaced by ``table``."""
    if readme.count(START) != 1 or readme.count(END) != 1:
        raise ValueError(f"README.md must hold the markers {START.strip()} and {END} once each")
    head, rest = readme.split(START)
    return head + START + table + END + rest.split(END)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite README.md's table")
    args = parser.parse_args()
    table = zoo_table(json.loads((REPO / "mlbook" / "zoo" / "models.json").read_text()),
                      load_protocols())
    if args.write:
        readme = REPO / "README.md"
        readme.write_text(readme_with_table(readme.read_text(), table))
    else:
        print(table, end="")


if __name__ == "__main__":
    main()
