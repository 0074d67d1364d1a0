"""`make nbval`'s scheduling plugin (.ci/nbval_timing.py): longest recorded chapter first."""

from __future__ import annotations

import json
from types import SimpleNamespace

from conftest import REPO, load_script

nbval_timing = load_script(".ci/nbval_timing.py")


def _cells(notebook: str, n: int) -> list[SimpleNamespace]:
    return [SimpleNamespace(nodeid=f"book/{notebook}.ipynb::Cell {i}") for i in range(n)]


def test_notebooks_go_longest_first_unknown_first_cells_in_order(tmp_path, monkeypatch):
    committed, recorded = tmp_path / "committed.json", tmp_path / "recorded.json"
    committed.write_text(json.dumps({"book/a.ipynb": 10, "book/b.ipynb": 300,
                                     "book/c.ipynb": 50}))
    recorded.write_text(json.dumps({"book/a.ipynb": 100}))  # the latest run wins
    monkeypatch.setattr(nbval_timing, "COMMITTED", committed)
    monkeypatch.setattr(nbval_timing, "RECORDED", recorded)
    items = _cells("a", 2) + _cells("b", 2) + _cells("new", 1) + _cells("c", 3)
    nbval_timing.pytest_collection_modifyitems(None, None, items)
    assert [item.nodeid for item in items] == [
        "book/new.ipynb::Cell 0",
        "book/b.ipynb::Cell 0", "book/b.ipynb::Cell 1",
        "book/a.ipynb::Cell 0", "book/a.ipynb::Cell 1",
        "book/c.ipynb::Cell 0", "book/c.ipynb::Cell 1", "book/c.ipynb::Cell 2",
    ]


def test_committed_seconds_name_chapters_of_the_toc():
    seconds = json.loads((REPO / ".ci" / "chapter_seconds.json").read_text())
    assert seconds and all(s > 0 for s in seconds.values())
    assert all((REPO / path).is_file() for path in seconds), seconds
