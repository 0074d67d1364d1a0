"""The Chinese edition's catalogues: extract, update and check them.

The English notebooks and pages are the only source. Sphinx's gettext builder extracts every
translatable message (markdown cells, titles, captions, glossary entries) into one template per
page; the Chinese text lives in ``book/locales/zh_CN/LC_MESSAGES/book/<page>.po`` (the
sphinx-intl layout with ``gettext_compact = False``), which the Chinese build reads.

    python .ci/translations.py update        # templates -> catalogues (keeps every translation)
    python .ci/translations.py check [PO...] # complete, not fuzzy, markup and terms intact
    python .ci/translations.py dump PO       # the messages still to translate, numbered
    python .ci/translations.py apply PO FILE # translations written in dump's format
    python .ci/translations.py config OUT    # a build's _config.yml (the Chinese, or --english)

The API page's docstrings (pulled in by autodoc from ``mlbook/``) stay English: their messages
are left out of the catalogue, so the Chinese API page shows them as they are. Everything else
must be translated; a changed English sentence leaves its old translation behind as a fuzzy
suggestion and fails ``check`` until a translator updates it.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import polib

REPO = Path(__file__).resolve().parent.parent
LOCALES = REPO / "book" / "locales"
LANGUAGE = "zh_CN"
CATALOGUES = LOCALES / LANGUAGE / "LC_MESSAGES"
TERMS = LOCALES / LANGUAGE / "terms.txt"
TEMPLATES = REPO / "_build" / "gettext"

HEADER = {
    "Project-Id-Version": "mlbook",
    "Language": LANGUAGE,
    "MIME-Version": "1.0",
    "Content-Type": "text/plain; charset=UTF-8",
    "Content-Transfer-Encoding": "8bit",
    "Plural-Forms": "nplurals=1; plural=0;",
}


# --- extraction --------------------------------------------------------------------------------

def extract(out: Path = TEMPLATES) -> Path:
    """Run Sphinx's gettext builder over the book (nothing is executed) into ``out``."""
    jupyter_book = str(Path(sys.executable).parent / "jupyter-book")
    subprocess.run([jupyter_book, "config", "sphinx", str(REPO)],
                   check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "sphinx", "-b", "gettext", "-q", "-E",
                    "-D", "gettext_compact=0", "-D", "nb_execution_mode=off",
                    str(REPO), str(out)], check=True, cwd=REPO,
                   # the generated conf.py names the book's local extension but not its folder
                   env={**os.environ, "PYTHONPATH": os.pathsep.join(
                       filter(None, [str(REPO / "book" / "_ext"), os.environ.get("PYTHONPATH")]))})
    return out


def _source_of(occurrence: str) -> str:
    """``../../book/x.ipynb`` or ``/abs/repo/mlbook/y.py:docstring of z`` -> repo-relative."""
    path = occurrence.split(":docstring")[0]
    match = re.search(r"(?:^|/)((?:book|mlbook)/.*)$", path)
    return match.group(1) if match else path


def is_docstring(entry: polib.POEntry) -> bool:
    """A message that only autodoc's docstrings produce (it stays English)."""
    # polib splits "path:docstring of name:line" at the spaces; the page files are what count
    files = [f for f, _ in entry.occurrences if "/" in f]
    docstring = re.compile(r"(?:^|[:/])docstring$|:docstring\b")  # attributes: "../../docstring"
    return any(docstring.search(f) for f in files) and not any(
        _source_of(f).startswith("book/") for f in files)


def templates(root: Path = TEMPLATES) -> dict[str, polib.POFile]:
    """``{"book/intro": template}`` for every page's template under ``root``."""
    return {str(p.relative_to(root).with_suffix("")): polib.pofile(str(p))
            for p in sorted(root.rglob("*.pot")) if p.relative_to(root).parts[0] == "book"}


CJK = re.compile(r"[\u4e00-\u9fff]")


def is_display_math(msgid: str) -> bool:
    """A ``$$...$$`` block: gettext gives its LaTeX between two newlines, without the $$."""
    return msgid.startswith("\n") and msgid.endswith("\n") and len(msgid.strip()) > 0


def needs_translation(msgid: str) -> bool:
    """False for messages that are the same in both editions: display mathematics, code,
    numbers, and the glossary's bilingual headwords ("Transfer learning · 迁移学习")."""
    if " · " in msgid and CJK.search(msgid) and "\n" not in msgid and len(msgid) < 90:
        return False
    if is_display_math(msgid):
        return False
    prose = LINK.sub("", CODE.sub("", MATH.sub("", ROLE.sub("", msgid))))
    return re.search(r"[A-Za-z]{2,}", prose) is not None


# --- update ------------------------------------------------------------------------------------

def update(root: Path = TEMPLATES, catalogues: Path = CATALOGUES,
           pages: list[str] | None = None) -> dict[str, int]:
    """Merge each template into its catalogue; return the number of untranslated messages.

    Translations of messages that are still in the template are kept; a message that is new
    gets the translation of its closest former message as a fuzzy suggestion when one is
    close (as ``msgmerge`` does); messages no longer in the template are dropped. Locations
    are kept as repository paths without line numbers, so a catalogue changes only when the
    text does.
    """
    todo = {}
    for page, template in templates(root).items():
        if pages and page not in pages:
            continue
        path = catalogues / f"{page}.po"
        old = polib.pofile(str(path)) if path.is_file() else polib.POFile()
        known = {e.msgid: e for e in old if not e.obsolete}
        new = polib.POFile(wrapwidth=0)
        new.metadata = dict(HEADER)
        for entry in template:
            if is_docstring(entry):
                continue
            sources = sorted({_source_of(f) for f, _ in entry.occurrences if "/" in f})
            kept = known.get(entry.msgid)
            fresh = polib.POEntry(msgid=entry.msgid, occurrences=[(s, "") for s in sources])
            if (kept is None or not kept.msgstr) and not needs_translation(entry.msgid):
                kept = polib.POEntry(msgid=entry.msgid, msgstr=entry.msgid)
            if kept is not None:
                fresh.msgstr, fresh.flags = kept.msgstr, list(kept.flags)
                fresh.previous_msgid = kept.previous_msgid
            else:
                close = difflib.get_close_matches(entry.msgid, list(known), n=1, cutoff=0.75)
                if close:
                    fresh.msgstr = known[close[0]].msgstr
                    fresh.flags = ["fuzzy"]
                    fresh.previous_msgid = close[0]
            new.append(fresh)
        path.parent.mkdir(parents=True, exist_ok=True)
        new.save(str(path))
        todo[page] = sum(1 for e in new if not e.msgstr or e.fuzzy)
    return todo


# --- checks ------------------------------------------------------------------------------------

ROLE = re.compile(r"\{[a-z:]+\}`[^`]*`|(?<![\w`]):[a-z]+(?::[a-z]+)*:`[^`]*`")  # MyST and rST
CODE = re.compile(r"(?<![`}])`([^`]+)`")
MATH = re.compile(r"\$\$.+?\$\$|\$[^$\n]+?\$", re.S)
TITLED = re.compile(r"^(\{[a-z:]+\}|:[a-z:]+:)`[^`<]*<([^`>]+)>`$")
LINK = re.compile(r"\]\(([^)\s]+)\)")
LATIN_NAMES = re.compile(r"\b(?:MAML|ANIL|Meta-SGD|ProtoMAML|FOMAML|Reptile|ProtoNets?|LoRA|"
                         r"BitFit|DANN|L2-SP|iMAML|CNP|SNAIL|MANN|Omniglot|ImageNet|mlbook)\b")


def markup(text: str) -> dict[str, Counter]:
    """What must survive translation unchanged: roles, code spans, mathematics, link targets."""
    without_roles = ROLE.sub("", text)
    return {
        # a role's target must survive; its own link text ({ref}`text <target>`) is translated
        "roles": Counter(TITLED.sub(r"\1`\2`", role) for role in ROLE.findall(text)),
        "code": Counter(CODE.findall(MATH.sub("", without_roles))),
        "math": Counter(m.strip() for m in MATH.findall(without_roles)),
        "links": Counter(LINK.findall(text)),
        "names": Counter(LATIN_NAMES.findall(ROLE.sub("", text))),
    }


@dataclass(frozen=True)
class Term:
    english: re.Pattern
    chinese: str


def terms(path: Path = TERMS) -> list[Term]:
    """The chosen rendering of each glossary term: ``regex<TAB>中文`` per line."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            english, chinese = (part.strip() for part in line.split("\t"))
            out.append(Term(re.compile(english, re.I), chinese))
    return out


ALLOW = re.compile(r"terms-ok:\s*(.+)")


def problems(entry: polib.POEntry, term_list: list[Term]) -> list[str]:
    """Why one translated message is not acceptable (empty when it is)."""
    if not entry.msgstr:
        return ["untranslated"]
    if entry.fuzzy:
        return ["fuzzy (the English changed; update the translation, then drop the flag)"]
    if is_display_math(entry.msgid):
        return [] if entry.msgstr == entry.msgid else ["display mathematics must stay as it is"]
    found = []
    source, target = markup(entry.msgid), markup(entry.msgstr)
    for kind in source:
        if source[kind] != target[kind]:
            lost = source[kind] - target[kind]
            added = target[kind] - source[kind]
            found.append(f"{kind} differ: missing {sorted(lost)} added {sorted(added)}")
    allowed = set()
    for comment in (entry.tcomment or "").splitlines():
        match = ALLOW.search(comment)
        if match:
            allowed |= {t.strip() for t in match.group(1).split(",")}
    english_only = ROLE.sub("", MATH.sub("", entry.msgid))
    english_only = CODE.sub("", english_only)
    for term in term_list:
        if term.english.search(english_only) and term.chinese not in entry.msgstr \
                and term.chinese not in allowed:
            found.append(f"term: {term.english.pattern!r} should be rendered {term.chinese}")
    return found


def check(paths: list[Path] | None = None, root: Path | None = None) -> list[str]:
    """Every problem in the catalogues, as ``page: message: problem`` lines.

    With ``root`` (a fresh gettext extraction), each catalogue is also compared with its
    template: every message of the template (docstrings apart) must be in the catalogue.
    """
    term_list = terms()
    report = []
    if root is not None:
        for page, template in templates(root).items():
            path = CATALOGUES / f"{page}.po"
            if not path.is_file():
                report.append(f"{page}: no catalogue {path.relative_to(REPO)}; run update")
                continue
            have = {e.msgid for e in polib.pofile(str(path)) if not e.obsolete}
            for entry in template:
                if not is_docstring(entry) and entry.msgid not in have:
                    report.append(f"{page}: not in the catalogue (run update): "
                                  f"{entry.msgid[:70]!r}")
    for path in paths or sorted(CATALOGUES.rglob("*.po")):
        page = str(path.relative_to(CATALOGUES).with_suffix("")) if path.is_relative_to(
            CATALOGUES) else str(path)
        for entry in polib.pofile(str(path)):
            if entry.obsolete:
                continue
            for problem in problems(entry, term_list):
                report.append(f"{page}: {entry.msgid[:70]!r}: {problem}")
    return report


# --- the Chinese build's configuration --------------------------------------------------------

def book_config(out: Path, chinese: bool = True, execute: bool = True) -> Path:
    """Write a build's ``_config.yml`` to ``out``: the book's own, for the Chinese edition
    (``chinese``) or the English one, executed from the cache or not (``execute=False``: the
    strict builds).

    The Chinese edition gets ``language: zh_CN`` (the theme's own words in Chinese, the
    catalogues read), Chinese search (jieba), and the English build's execution cache, so that
    no chapter runs a second time.
    """
    import yaml

    config = yaml.safe_load((REPO / "_config.yml").read_text(encoding="utf-8"))
    if not execute:
        config["execute"]["execute_notebooks"] = "off"
    # paths of local extensions are read relative to the configuration file
    config["sphinx"]["local_extensions"] = {
        name: str(REPO / path) for name, path in config["sphinx"]["local_extensions"].items()}
    if chinese:
        config["title"] = "快速适应新任务"
        config["execute"]["cache"] = str(REPO / "_build" / ".jupyter_cache")
        config["sphinx"]["config"].update(language=LANGUAGE, html_search_language="zh")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return out


# --- dump and apply: a plain-text format a translator can write without escaping -------------

MARK = re.compile(r"^=== (\d+)$", re.M)


def _entries(path: Path) -> tuple[polib.POFile, list[polib.POEntry]]:
    po = polib.pofile(str(path), wrapwidth=0)
    return po, [e for e in po if not e.obsolete]


def dump(path: Path, everything: bool = False) -> str:
    """Each message still to translate as ``=== N`` followed by its English text verbatim."""
    _, entries = _entries(path)
    return "\n".join(f"=== {i}\n{e.msgid.strip(chr(10))}" for i, e in enumerate(entries)
                     if everything or not e.msgstr or e.fuzzy) + "\n"


def apply(path: Path, text: str) -> list[str]:
    """Write the translations in ``text`` (dump's format) into the catalogue at ``path``.

    Returns the problems of the messages just written (markup, terms), numbered as in dump.
    """
    po, entries = _entries(path)
    pieces = MARK.split(text)
    term_list, report = terms(), []
    for number, body in zip(pieces[1::2], pieces[2::2], strict=True):
        entry = entries[int(number)]
        body = body.strip("\n")
        if entry.msgid.startswith("\n"):
            body = "\n" + body
        if entry.msgid.endswith("\n"):
            body += "\n"
        entry.msgstr = body
        if entry.fuzzy:
            entry.flags.remove("fuzzy")
            entry.previous_msgid = None
        report += [f"=== {number}: {p}" for p in problems(entry, term_list)]
    po.save(str(path))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    updater = sub.add_parser("update", help="extract the templates, merge them into the catalogues")
    updater.add_argument("pages", nargs="*", help="only these pages (book/intro ...)")
    checker = sub.add_parser("check", help="report untranslated, fuzzy or damaged messages")
    checker.add_argument("po", nargs="*", type=Path, help="catalogues (default: all)")
    checker.add_argument("--against-source", action="store_true",
                         help="also extract the templates and compare (what CI does)")
    configurer = sub.add_parser("config", help="write a build's _config.yml (Chinese by default)")
    configurer.add_argument("out", type=Path)
    configurer.add_argument("--no-execute", action="store_true", help="for the strict builds")
    configurer.add_argument("--english", action="store_true", help="the English edition's")
    dumper = sub.add_parser("dump", help="print the messages still to translate, numbered")
    dumper.add_argument("po", type=Path)
    dumper.add_argument("--all", action="store_true", help="every message, translated or not")
    applier = sub.add_parser("apply", help="write translations given in dump's format")
    applier.add_argument("po", type=Path)
    applier.add_argument("file", type=Path)
    args = parser.parse_args(argv)
    if args.command == "config":
        print(book_config(args.out, chinese=not args.english, execute=not args.no_execute))
        return 0
    if args.command == "dump":
        print(dump(args.po, args.all), end="")
        return 0
    if args.command == "apply":
        report = apply(args.po, args.file.read_text(encoding="utf-8"))
        print("\n".join(report) if report else "applied; markup and terms intact")
        return 1 if report else 0
    if args.command == "update":
        for page, n in update(extract(), pages=args.pages).items():
            print(f"{page}: {n} to translate")
        return 0
    report = check([p.resolve() for p in args.po] or None,
                   extract() if args.against_source else None)
    print("\n".join(report) if report else "all messages translated, markup and terms intact")
    return 1 if report else 0


if __name__ == "__main__":
    sys.exit(main())
