"""A link from every page to the same page in the other edition (English <-> 中文).

The English edition is built into ``_build/html`` and the Chinese one into
``_build/html/zh_CN``, with the same page names, so the link is relative: from ``book/x.html``
to ``zh_CN/book/x.html`` and back. sphinx-book-theme has no language switcher; the link is put
at the top of each page's article.
"""

from __future__ import annotations

from sphinx.application import Sphinx

#: The subfolder the Chinese edition is published in, under the English one.
CHINESE = "zh_CN"


def other_edition(pagename: str, language: str | None) -> tuple[str, str, str]:
    """(relative URL, label, language tag) of the same page in the other edition."""
    up = "../" * pagename.count("/")
    if (language or "en").startswith("zh"):
        return f"{up}../{pagename}.html", "English", "en"
    return f"{up}{CHINESE}/{pagename}.html", "中文", "zh-CN"


def _add_link(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    if doctree is None or "body" not in context:  # search, genindex: no article
        return
    url, label, tag = other_edition(pagename, app.config.language)
    context["body"] = (f'<p class="mlbook-other-edition"><a href="{url}" hreflang="{tag}" '
                       f'lang="{tag}">{label}</a></p>\n' + context["body"])


def setup(app: Sphinx) -> dict:
    app.connect("html-page-context", _add_link)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
