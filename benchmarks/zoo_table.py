"""The README's table of the zoo's models, generated from ``mlbook/zoo/models.json``.

Run ``python benchmarks/zoo_table.py --write`` after training a model to rewrite the table
between the ``<!-- zoo table -->`` markers of ``README.md``; without ``--write`` it prints the
table. ``tests/test_zoo.py`` checks that the README holds exactly this table, so its numbers
cannot fall behind the shipped models.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- zoo table -->\n", "<!-- /zoo table -->"


def zoo_table(index: dict) -> str:
    """Markdown table: one row per model of the index (name, method, split, steps, training
    minutes, the test scores recorded at training time)."""
    rows = ["| model | method | split | steps | training minutes | test accuracy (%) |",
            "| --- | --- | --- | --- | --- | --- |"]
    for name, meta in index.items():
        scores = []
        for setting, value in meta["test"].items():
            if isinstance(value, dict):
                scores.append(f"{setting} {100 * value['acc']:.2f} ± {100 * value['ci95']:.2f}")
            else:  # the Lake split's error on Lake's runs
                scores.append(f"Lake's 20 runs: {100 * value:.2f}% error")
        episodes = meta.get("test_episodes", 600)
        note = f" ({episodes} episodes)" if episodes != 600 else ""
        minutes = f"{meta['train_seconds'] / 60:.0f}"
        if "init_train_seconds" in meta:  # its encoder started from another zoo model
            minutes += f" + {meta['init_train_seconds'] / 60:.0f} (`{meta['init_encoder']}`)"
        rows.append(f"| `{name}` | {meta['method']} | {meta['split']} | {meta['steps']:,} | "
                    f"{minutes} | {'; '.join(scores)}{note} |")
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
    table = zoo_table(json.loads((REPO / "mlbook" / "zoo" / "models.json").read_text()))
    if args.write:
        readme = REPO / "README.md"
        readme.write_text(readme_with_table(readme.read_text(), table))
    else:
        print(table, end="")


if __name__ == "__main__":
    main()
