"""The built book works offline: in a real browser (headless Chromium), MathJax, served from the
build's ``_static`` and not from a CDN, typesets every formula, and no page loads anything
from outside the build.

The pages are read where the builds put them (``_build/html`` from ``make book``,
``_build/strict/_build/html`` from ``make strict``, or the folders ``MLBOOK_HTML`` names, as
in ``tests/test_rendered_html.py``). Without a built book the tests are skipped; without
Chromium too, unless ``MLBOOK_REQUIRE_BROWSER=1`` (``.ci/run`` sets it after installing
Debian's ``chromium``), where a missing browser fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_rendered_html import _build_dirs  # the same builds, found the same way

#: Chapters heavy in mathematics (inline and display).
PAGES = ("book/maml_sinusoid.html", "book/fewshot_omniglot.html", "book/maml_math.html")
#: Hosts a page may link to (never load from): the launch buttons and the repository.
LINK_HOSTS = {"github.com", "mybinder.org", "colab.research.google.com",
              # links in the prose to a library's own documentation
              "pytorch.org"}
MATH_ELEMENT = re.compile(r'<(span|div) class="math notranslate nohighlight">')
RESOURCE = re.compile(r'<(?:script|img|iframe|source)\b[^>]*\bsrc="([^"]+)"'
                      r'|<link\b[^>]*\bhref="([^"]+)"')
ANCHOR = re.compile(r'<a\b[^>]*\bhref="(https?://[^"/]+)')


def _browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    if os.environ.get("MLBOOK_REQUIRE_BROWSER") == "1":
        pytest.fail("MLBOOK_REQUIRE_BROWSER=1 but no chromium on PATH: install Debian's "
                    "`chromium` package (apt-get install chromium)")
    pytest.skip("no chromium on PATH (apt-get install chromium to run this test)")


def _pages() -> list[Path]:
    return [build / page for build in _build_dirs() for page in PAGES
            if (build / page).is_file()]


def _dom(page: Path) -> str:
    """The page's DOM after its scripts ran (virtual time lets MathJax finish)."""
    result = subprocess.run(
        [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--virtual-time-budget=20000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=180)
    assert result.returncode == 0 and "<html" in result.stdout, result.stderr[-2000:]
    return result.stdout


@pytest.mark.parametrize("page", _pages() or [None], ids=lambda p: str(p) if p else "none")
def test_formulas_are_typeset_offline(page: Path | None) -> None:
    if page is None:
        pytest.skip("no built book: run make book or make strict first")
    source = page.read_text(encoding="utf-8")
    assert MATH_ELEMENT.search(source), f"{page.name} has no formula to check"
    dom = _dom(page)
    formulas = re.split(MATH_ELEMENT, dom)[2::2]  # the text after each opening tag
    assert formulas, "the DOM lost the formulas"
    untypeset = [f[:80] for f in formulas if not f.lstrip().startswith("<mjx-container")]
    assert not untypeset, f"{page.name}: formulas MathJax did not typeset: {untypeset[:3]}"
    assert "\\(" not in re.sub(r"<script.*?</script>", "", dom, flags=re.S), (
        f"{page.name} still shows raw \\( ... \\) after its scripts ran")


@pytest.mark.parametrize("page", _pages() or [None], ids=lambda p: str(p) if p else "none")
def test_pages_load_nothing_from_outside_the_build(page: Path | None) -> None:
    if page is None:
        pytest.skip("no built book: run make book or make strict first")
    source = page.read_text(encoding="utf-8")
    external = [url for match in RESOURCE.findall(source) for url in match
                if url.startswith(("http://", "https://", "//"))]
    assert not external, f"{page.name} loads from outside the build: {external}"
    hosts = {url.split("://", 1)[1] for url in ANCHOR.findall(source)}
    assert hosts <= LINK_HOSTS, f"{page.name} links to unexpected hosts: {hosts - LINK_HOSTS}"
