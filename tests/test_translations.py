"""The Chinese edition: complete catalogues, intact markup, one rendering per term, both builds.

The catalogue tests extract the English messages afresh (Sphinx's gettext builder, nothing
executed), so a changed English sentence fails here until its translation is updated
(``make translations``, then translate what ``.ci/translations.py dump`` lists). The build tests
read the HTML that ``make book`` (both editions, ``_build/html`` and ``_build/html/zh_CN``) or
``make strict`` (``_build/strict_zh``) left, and are skipped where there is none.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import polib
import pytest
from conftest import REPO, load_script

translations = load_script(".ci/translations.py")
language_links = load_script("book/_ext/language_links.py")

PAGES = sorted(str(p.relative_to(REPO).with_suffix("")) for p in (REPO / "book").glob("*")
               if p.suffix in {".md", ".ipynb"}
               and p.stem in re.findall(r"(?:file|root):\s*book/(\S+)",
                                        (REPO / "_toc.yml").read_text()))


@pytest.fixture(scope="module")
def extracted(tmp_path_factory) -> Path:
    return translations.extract(tmp_path_factory.mktemp("gettext"))


# --- the catalogues ----------------------------------------------------------------------------

def test_every_page_has_a_catalogue_and_every_message_is_in_it(extracted):
    pages = set(translations.templates(extracted))
    assert pages == set(PAGES), "a page of _toc.yml has no template, or a template no page"
    report = translations.check(root=extracted)
    assert not report, ("the Chinese catalogues are behind the English text "
                        "(make translations, then translate):\n" + "\n".join(report[:40])
                        + (f"\n... and {len(report) - 40} more" if len(report) > 40 else ""))


def test_only_docstrings_stay_english(extracted):
    api = translations.templates(extracted)["book/api"]
    docstrings = [e for e in api if translations.is_docstring(e)]
    prose = [e for e in api if not translations.is_docstring(e)]
    assert len(docstrings) > 300 and len(prose) >= 10
    catalogue = {e.msgid for e in polib.pofile(str(translations.CATALOGUES / "book/api.po"))}
    assert {e.msgid for e in prose} <= catalogue
    assert not {e.msgid for e in docstrings} & catalogue


def test_the_chosen_renderings_are_the_glossarys():
    glossary = (REPO / "book" / "glossary.md").read_text(encoding="utf-8")
    headwords = re.findall(r"^([^#\s].*?) · (.+)$", glossary, re.M)
    chinese = " ".join(zh for _, zh in headwords)
    for term in translations.terms():
        assert term.chinese in chinese, f"{term.chinese} is not a rendering in the glossary"
    # Every headword has its rendering in terms.txt, except names kept in Latin script and
    # words too common or too wide to check mechanically (listed, with the reason).
    kept_latin = {"MAML", "ANIL", "Meta-SGD", "ProtoMAML", "Reptile", "LoRA", "BitFit", "L2-SP"}
    too_wide = {
        "Task",  # every page; 任务 is checked by reading, not by pattern
        "Head",  # 分类头 or 任务头 by context (regression heads are not classifiers)
        "Freezing",  # "frozen" also describes frozen statistics, not only frozen weights
        "N-way K-shot",  # "5-way 1-shot" is kept as written in the Chinese literature
        "Source and target",  # checked as source/target task and domain (源任务, 目标域...)
    }
    for english, _ in headwords:
        if english in kept_latin | too_wide:
            continue
        assert any(t.english.search(english) for t in translations.terms()), (
            f"glossary term {english!r} has no chosen rendering in terms.txt")


# --- the checker itself ------------------------------------------------------------------------

def _entry(msgid: str, msgstr: str) -> polib.POEntry:
    return polib.POEntry(msgid=msgid, msgstr=msgstr)


@pytest.mark.parametrize("msgstr, problem", [
    ("见 {doc}`background` 和 $\\alpha$ 以及 `mlbook.meta`，MAML。", None),
    ("", "untranslated"),
    ("见 {doc}`practice` 和 $\\alpha$ 以及 `mlbook.meta`，MAML。", "roles differ"),
    ("见 {doc}`background` 和 $\\beta$ 以及 `mlbook.meta`，MAML。", "math differ"),
    ("见 {doc}`background` 和 $\\alpha$ 以及 mlbook.meta，MAML。", "code differ"),
    ("见 {doc}`background` 和 $\\alpha$ 以及 `mlbook.meta`，模型无关元学习。", "names differ"),
])
def test_checker_finds_damaged_markup(msgstr, problem):
    msgid = "See {doc}`background` and $\\alpha$ with `mlbook.meta`, MAML."
    found = translations.problems(_entry(msgid, msgstr), [])
    if problem is None:
        assert found == []
    else:
        assert any(problem in f for f in found), found


def test_checker_finds_a_term_rendered_otherwise_unless_allowed():
    rule = [translations.Term(re.compile(r"\bsupport sets?\b", re.I), "支持集")]
    msgid = "The support set has five images."
    assert translations.problems(_entry(msgid, "支持集有五张图像。"), rule) == []
    assert translations.problems(_entry(msgid, "支撑集有五张图像。"), rule)
    allowed = _entry(msgid, "支撑集有五张图像。")
    allowed.tcomment = "terms-ok: 支持集"
    assert translations.problems(allowed, rule) == []


def test_update_keeps_translations_suggests_fuzzy_and_drops_the_old(tmp_path):
    root, catalogues = tmp_path / "pot", tmp_path / "po"
    (root / "book").mkdir(parents=True)
    (catalogues / "book").mkdir(parents=True)

    def write_template(*msgids):
        pot = polib.POFile()
        for m in msgids:
            pot.append(polib.POEntry(msgid=m, occurrences=[("../../book/p.md", "3")]))
        pot.save(str(root / "book" / "p.pot"))

    write_template("A sentence about support sets.", "$$x$$", "Gone tomorrow.")
    assert translations.update(root, catalogues) == {"book/p": 2}  # the formula is filled in
    po = polib.pofile(str(catalogues / "book" / "p.po"))
    assert po.find("$$x$$").msgstr == "$$x$$"
    po.find("A sentence about support sets.").msgstr = "关于支持集的一句话。"
    po.find("Gone tomorrow.").msgstr = "明天就没了。"
    po.save()
    write_template("A sentence about the support sets.", "$$x$$")  # one edited, one removed
    assert translations.update(root, catalogues) == {"book/p": 1}
    po = polib.pofile(str(catalogues / "book" / "p.po"))
    edited = po.find("A sentence about the support sets.")
    assert edited.fuzzy and edited.msgstr == "关于支持集的一句话。"
    assert edited.previous_msgid == "A sentence about support sets."
    assert po.find("Gone tomorrow.") is None
    assert po[0].occurrences == [("book/p.md", "")]  # no machine paths, no line numbers


def test_dump_and_apply_round_trip_without_escaping(tmp_path):
    po = polib.POFile()
    po.append(polib.POEntry(msgid="Step $\\alpha$ with `lr`.\nSecond line."))
    po.append(polib.POEntry(msgid="\n\\theta' = \\theta\n"))
    path = tmp_path / "x.po"
    po.save(str(path))
    text = translations.dump(path)
    assert text.startswith("=== 0\nStep $\\alpha$ with `lr`.\nSecond line.\n=== 1\n")
    report = translations.apply(path, "=== 0\n步长 $\\alpha$，参数 `lr`。\n第二行。\n")
    assert report == []
    assert polib.pofile(str(path))[0].msgstr == "步长 $\\alpha$，参数 `lr`。\n第二行。"


# --- the builds --------------------------------------------------------------------------------

def test_links_between_the_editions():
    assert language_links.other_edition("book/intro", "en") == (
        "../zh_CN/book/intro.html", "中文", "zh-CN")
    assert language_links.other_edition("book/intro", "zh_CN") == (
        "../../book/intro.html", "English", "en")
    assert language_links.other_edition("index", None)[0] == "zh_CN/index.html"


BOOK = REPO / "_build" / "html"
CHINESE_BUILDS = [d for d in (BOOK / "zh_CN", REPO / "_build/strict_zh/_build/html")
                  if (d / "index.html").is_file()]
needs_chinese_build = pytest.mark.skipif(not CHINESE_BUILDS,
                                         reason="no Chinese build: run make book or make strict")


@needs_chinese_build
@pytest.mark.parametrize("build", CHINESE_BUILDS, ids=lambda d: str(d.relative_to(REPO)))
def test_chinese_pages_are_chinese_with_the_themes_words_and_search(build: Path):
    intro = (build / "book" / "intro.html").read_text(encoding="utf-8")
    assert '<html lang="zh-CN"' in intro
    assert "快速适应新任务" in intro and "全书导览" in intro
    assert "搜索" in intro and "下一页" in intro  # the theme's own words
    index = (build / "searchindex.js").read_text(encoding="utf-8")
    terms = json.loads(index[index.index("(") + 1: index.rindex(")")])["terms"]
    assert {"迁移", "学习", "任务"} <= set(terms), "Chinese search index not segmented (jieba)"
    for page in PAGES:
        html = (build / f"{page}.html").read_text(encoding="utf-8")
        assert 'class="mlbook-other-edition"' in html and ">English</a>" in html, page


@pytest.mark.skipif(not (BOOK / "zh_CN" / "index.html").is_file(),
                    reason="no two-edition build: run make book")
def test_every_page_links_to_itself_in_the_other_edition():
    link = re.compile(r'<p class="mlbook-other-edition"><a href="([^"]+)"')
    for page in PAGES:
        for html_page in (BOOK / f"{page}.html", BOOK / "zh_CN" / f"{page}.html"):
            found = link.search(html_page.read_text(encoding="utf-8"))
            assert found, f"{html_page.relative_to(REPO)} has no link to the other edition"
            target = (html_page.parent / found.group(1)).resolve()
            assert target.is_file() and target.name == html_page.name, found.group(1)
            assert target != html_page.resolve()


@pytest.mark.skipif(not (BOOK / "zh_CN" / "index.html").is_file(),
                    reason="no two-edition build: run make book")
def test_chinese_edition_shows_the_executed_outputs():
    # the Chinese build reads the English build's execution cache: the chapters' figures are
    # there although no chapter was executed a second time
    for page in ("book/maml_sinusoid", "book/fewshot_omniglot"):
        english = (BOOK / f"{page}.html").read_text(encoding="utf-8")
        chinese = (BOOK / "zh_CN" / f"{page}.html").read_text(encoding="utf-8")
        assert english.count("<img") >= 2
        assert chinese.count("<img") == english.count("<img"), page
