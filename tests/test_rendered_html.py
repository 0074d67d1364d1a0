"""The rendered book shows no machine paths, no stderr blocks and no Python warnings.

The pages are scanned where the builds put them: ``_build/html`` (``make book``, chapters
executed, so their outputs are checked too) and ``_build/strict/_build/html`` (``make
strict``, execution off: prose, API pages and directives). ``MLBOOK_HTML`` names other build
folders (separated by ``os.pathsep``); without any built HTML the tests are skipped.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BUILDS = ("_build/html", "_build/strict/_build/html", "_build/strict_zh/_build/html")

#: Fragments of paths of the machine that built the book; none may reach a reader.
MACHINE_PATHS = ("site-packages", "/tmp/", "/work/", "/root/", "/home/")
#: A stderr output block of myst-nb (``<div class="output stderr ...">``).
STDERR_BLOCK = re.compile(r'class="[^"]*\bstderr\b[^"]*"')
#: A Python warning printed into an output, e.g. "UserWarning: ...".
PY_WARNING = re.compile(r"\b[A-Z]\w*Warning: ")
#: A MyST directive that was not parsed and shows as text (e.g. a backtick fence whose title
#: holds a code span: CommonMark forbids backticks in a backtick fence's info string).
LEAKED_DIRECTIVE = re.compile(r"<p>(?:```|~~~|:::)\{[\w:-]+\}")


def _build_dirs() -> list[Path]:
    given = os.environ.get("MLBOOK_HTML")
    names = given.split(os.pathsep) if given else DEFAULT_BUILDS
    return [d for d in (ROOT / n for n in names if n) if (d / "index.html").is_file()]


def _pages() -> list[Path]:
    pages = []
    for build in _build_dirs():
        pages += sorted(p for p in build.rglob("*.html")
                        if not {"_static", "_sources"} & set(p.relative_to(build).parts))
    return pages


PAGES = _pages()
pytestmark = pytest.mark.skipif(
    not PAGES,
    reason="no built book: run `make book` (executed pages in _build/html) or `make strict`, "
           "or point MLBOOK_HTML at a build's html folder",
)


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else page.name


def _context(text: str, start: int) -> str:
    return re.sub(r"\s+", " ", text[max(0, start - 80): start + 80])


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_page_shows_no_machine_path_stderr_or_warning(page: Path):
    text = page.read_text(encoding="utf-8")
    problems = []
    for fragment in MACHINE_PATHS:
        at = text.find(fragment)
        if at >= 0:
            problems.append(f"machine path {fragment!r}: ...{_context(text, at)}...")
    for pattern, what in ((STDERR_BLOCK, "stderr output block"), (PY_WARNING, "Python warning"),
                          (LEAKED_DIRECTIVE, "directive shown as text")):
        if m := pattern.search(text):
            problems.append(f"{what}: ...{_context(text, m.start())}...")
    assert not problems, f"{_page_id(page)}:\n  " + "\n  ".join(problems)
