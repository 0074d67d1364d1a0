"""Every number in the book's prose is computed or cited.

A chapter may quote a measured number only where code produces it: in a cell's output
(``display(Markdown(f"..."))`` or a printed table), which this test does not read. A number
from a paper carries its citation. So a percentage or a decimal number in a *markdown cell*
of a notebook in ``_toc.yml``, or in one of its ``.md`` pages, fails this test unless

- a ``{cite}`` role stands in the same paragraph (a list item and a table row count as
  paragraphs of their own), or
- it is part of mathematics (``$...$``, ``$$...$$``) or code (inline code, code fences): the
  constants of an equation or of a recipe, written as such, or
- it matches one entry of :data:`ALLOWED`, the short list of numbers that are conventions
  rather than results.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml
from conftest import REPO

# Numbers that are conventions, not results; each entry says why it may stand in prose.
ALLOWED = {
    # the confidence level of an interval is a choice of the reader's, not a measurement
    "confidence level": re.compile(r"\b95\s?%(?=\s+(?:confidence\s+|paired\s+)?(?:interval|CI))"),
    # chance is 1/N of an N-way task, stated next to the word
    "chance level": re.compile(
        r"chance(?: is| level)?,? \(?\d+(?:\.\d+)?\s?%|\d+\s?% (?:is )?chance"
    ),
    # line numbers of an algorithm box ("line 2.3", "lines 2.2.2-2.2.3")
    "algorithm line": re.compile(r"\blines? \d+(?:\.\d+)+(?:\s?[-–]\s?\d+(?:\.\d+)+)?"),
    # software versions
    "version": re.compile(r"\b(?:Python|PyTorch|torch|CUDA|version)\s+\d+\.\d+(?:\.\d+)?"),
}

NUMBER = re.compile(r"(?<![\w.\-/])\d[\d,]*(?:\.\d+)?\s?%|(?<![\w.\-/])\d[\d,]*\.\d+(?![\w.])")
# Code fences (not MyST directives such as ```{exercise}, whose body is prose).
CODE_FENCE = re.compile(r"^(?P<fence>```+|~~~+)(?!\{)[^\n]*\n.*?^(?P=fence)\s*$", re.M | re.S)
LITERAL_DIRECTIVE = re.compile(
    r"^(?P<fence>```+)\{(?:literalinclude|code-cell|code-block|code)\}.*?^(?P=fence)\s*$",
    re.M | re.S,
)
STRIP = [
    re.compile(r"<!--.*?-->", re.S),
    re.compile(r"\$\$.*?\$\$", re.S),
    re.compile(r"\\begin\{(\w+\*?)\}.*?\\end\{\1\}", re.S),
    re.compile(r"(?<![\\$])\$(?!\$)(?:[^$\n]|\n(?!\s*\n))+?\$"),  # inline math, may wrap
    re.compile(r"``[^`\n]+``|`[^`\n]+`"),  # inline code and role targets
    re.compile(r"\]\([^)\n]*\)"),  # link targets
    re.compile(r"^:[\w-]+:.*$", re.M),  # directive options (:label:, :class:)
]
UNIT_START = re.compile(r"^\s*(?:[-*+]\s|\d+\.\s|\|)")


def toc_pages() -> list[str]:
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    pages = [toc["root"]]
    for part in toc.get("parts", []):
        pages += [chapter["file"] for chapter in part["chapters"]]
    return pages


def prose(page: str) -> list[tuple[str, str]]:
    """(where, text) for every markdown cell of a notebook, or the whole of a .md page."""
    notebook, markdown = REPO / f"{page}.ipynb", REPO / f"{page}.md"
    if markdown.exists():
        return [(markdown.name, markdown.read_text())]
    cells = json.loads(notebook.read_text())["cells"]
    return [(f"{notebook.name} cell {cell.get('id')}", "".join(cell["source"]))
            for cell in cells if cell["cell_type"] == "markdown"]


def units(text: str) -> list[str]:
    """Paragraphs, with each list item and table row a paragraph of its own."""
    text = LITERAL_DIRECTIVE.sub("\n", CODE_FENCE.sub("\n", text))
    for pattern in STRIP:
        text = pattern.sub(" ", text)
    found = []
    for block in re.split(r"\n\s*\n", text):
        current: list[str] = []
        for line in block.splitlines():
            if UNIT_START.match(line) and current:
                found.append("\n".join(current))
                current = []
            current.append(line)
        if current:
            found.append("\n".join(current))
    return found


def unexplained_numbers(text: str) -> list[str]:
    """The numbers of ``text`` that are neither cited, nor mathematics or code, nor allowed."""
    bad = []
    for unit in units(text):
        if "{cite" in unit:
            continue
        allowed = [m.span() for pattern in ALLOWED.values() for m in pattern.finditer(unit)]
        for match in NUMBER.finditer(unit):
            if any(start <= match.start() < end for start, end in allowed):
                continue
            context = unit[max(0, match.start() - 40): match.end() + 30]
            bad.append(f"{match.group().strip()!r} in '...{' '.join(context.split())}...'")
    return bad


PAGES = toc_pages()


def test_the_toc_lists_the_book():
    assert "book/intro" in PAGES and "book/fewshot_omniglot" in PAGES and "book/notation" in PAGES
    for page in PAGES:
        assert (REPO / f"{page}.ipynb").exists() or (REPO / f"{page}.md").exists(), page


@pytest.mark.parametrize("page", PAGES)
def test_numbers_in_prose_are_computed_or_cited(page):
    bad = [f"{where}: {number}"
           for where, text in prose(page) for number in unexplained_numbers(text)]
    assert not bad, (
        "numbers in markdown that no cell computes and no {cite} backs (write them from a "
        "cell with display(Markdown(...)), cite the paper in the same paragraph, or put an "
        "equation constant in $...$):\n" + "\n".join(bad)
    )


@pytest.mark.parametrize(
    "text, flagged",
    [
        ("MAML reaches 97.4% here.", ["97.4%"]),
        ("A loss of 0.25 nats.", ["0.25"]),
        ("Finn et al. report 98.7% {cite}`finn2017maml`.", []),
        ("- cited item 98.7% {cite}`finn2017maml`\n- uncited item 12.5%", ["12.5%"]),
        ("| a | 12.5% |\n| b {cite}`x` | 3.5% |", ["12.5%"]),
        ("The step $\\alpha = 0.4$ and `lr=0.003`\n\n```python\nx = 0.5\n```", []),
        ("inline math over two lines, $a = 2.55\n\\cdot b$", []),
        ("with 95% confidence intervals, chance is 20%, line 2.3, Python 3.11", []),
        ("1,623 characters and 20 drawings", []),
    ],
)
def test_the_checker_flags_what_it_should(text, flagged):
    found = [entry.split(" in ")[0].strip("'") for entry in unexplained_numbers(text)]
    assert found == flagged, found
