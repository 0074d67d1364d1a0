"""pytest plugin for `make nbval`: longest chapters first, and each chapter's seconds.

Loaded with ``-p nbval_timing`` (``.ci`` on ``PYTHONPATH``) next to pytest-xdist's
``-n 2 --dist loadfile --no-loadscope-reorder``: loadfile keeps each notebook (one kernel) on
one worker, and the workers take the notebooks in collection order, so this plugin sorts the
collection longest-first by the seconds each chapter took last time. A worker then picks up
the next-longest chapter whenever it finishes one (greedy longest-first scheduling), and the
two workers end close together. Chapters with no recorded time go first, in book order.

Recorded seconds come from ``_build/nbval_seconds.json`` (written after every run here) or,
on a clean clone, from the committed ``.ci/chapter_seconds.json`` (refresh it by copying the
former after a full run on the reference machine). At the end of the session the terminal
summary lists every chapter's wall seconds, the worker it ran on, their sum and the session's
wall seconds.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / ".ci" / "chapter_seconds.json"
RECORDED = REPO / "_build" / "nbval_seconds.json"


def recorded_seconds() -> dict[str, float]:
    """``{notebook path relative to the repository: seconds}``, the latest run winning."""
    seconds: dict[str, float] = {}
    for path in (COMMITTED, RECORDED):
        if path.is_file():
            seconds.update(json.loads(path.read_text()))
    return seconds


def _notebook(nodeid: str) -> str | None:
    file = nodeid.split("::", 1)[0]
    return file if file.endswith(".ipynb") else None


def pytest_collection_modifyitems(session, config, items) -> None:
    """Sort the cells notebook by notebook, longest recorded notebook first (stable)."""
    seconds = recorded_seconds()
    first_seen: dict[str, int] = {}
    for item in items:
        first_seen.setdefault(_notebook(item.nodeid) or "", len(first_seen))

    def key(item) -> tuple[float, int]:
        nb = _notebook(item.nodeid) or ""
        return (-seconds.get(nb, float("inf")), first_seen[nb])

    items.sort(key=key)  # stable: the cells of a notebook keep their order


class _Clock:
    def __init__(self) -> None:
        self.start = time.time()
        self.spans: dict[str, list[float]] = {}  # notebook -> [first start, last stop]
        self.worker: dict[str, str] = {}

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report) -> None:
        nb = _notebook(report.nodeid)
        start, stop = getattr(report, "start", None), getattr(report, "stop", None)
        if nb is None or start is None or stop is None:
            return
        span = self.spans.setdefault(nb, [start, stop])
        span[0], span[1] = min(span[0], start), max(span[1], stop)
        node = getattr(report, "node", None)  # set by xdist on the controller
        if node is not None:
            self.worker[nb] = node.gateway.id

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.spans:
            return
        seconds = {nb: stop - start for nb, (start, stop) in self.spans.items()}
        write = terminalreporter.write_line
        terminalreporter.section("seconds per chapter (kernel start to shutdown)")
        for nb, s in sorted(seconds.items(), key=lambda kv: -kv[1]):
            where = f"  [{self.worker[nb]}]" if nb in self.worker else ""
            write(f"{s:7.1f} s  {nb}{where}")
        write(f"{sum(seconds.values()):7.1f} s  sum over {len(seconds)} chapters; "
              f"{time.time() - self.start:.1f} s wall for the whole nbval session")
        missing = sorted(set(seconds) - set(json.loads(COMMITTED.read_text()))) \
            if COMMITTED.is_file() else sorted(seconds)
        if missing:
            write(f"no committed seconds for {', '.join(missing)}: after a full run, "
                  f"cp {RECORDED.relative_to(REPO)} {COMMITTED.relative_to(REPO)}")
        RECORDED.parent.mkdir(parents=True, exist_ok=True)
        merged = recorded_seconds() | {nb: round(s, 1) for nb, s in seconds.items()}
        tmp = RECORDED.with_name(f".{RECORDED.name}.{os.getpid()}")
        tmp.write_text(json.dumps(dict(sorted(merged.items())), indent=1) + "\n")
        os.replace(tmp, RECORDED)


def pytest_configure(config) -> None:
    # Timing lives in the process that sees every report: the xdist controller, or the only
    # process without xdist (workers have `workerinput`).
    if not hasattr(config, "workerinput"):
        config.pluginmanager.register(_Clock(), "nbval_timing_clock")
