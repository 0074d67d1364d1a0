"""One public repository URL (``_config.yml``'s ``repository.url``) and a ``make publish``.

The launch buttons (Colab, Binder) and the repository button of the rendered book are built
by Jupyter Book from ``repository.url``; every other place that names the repository must
name the same one, or a reader on Colab installs another package than the book shows.
"""

from __future__ import annotations

import json
import re
import tomllib

import yaml
from conftest import REPO

CONFIG = yaml.safe_load((REPO / "_config.yml").read_text())
URL = CONFIG["repository"]["url"]
GITHUB = re.compile(r"https://github\.com/[\w-]+/[\w.-]*[\w-]")  # a trailing "." ends a sentence


def test_repository_url_is_a_public_github_repository():
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", URL), URL
    assert CONFIG["repository"]["branch"]


def test_launch_buttons_use_the_repository_url():
    buttons = CONFIG["launch_buttons"]
    assert buttons["colab_url"] == "https://colab.research.google.com"
    assert buttons["binderhub_url"] == "https://mybinder.org"
    assert CONFIG["html"]["use_repository_button"] is True
    # Jupyter Book derives the buttons from repository.url: no second URL may sit in the file.
    assert set(GITHUB.findall((REPO / "_config.yml").read_text())) == {URL}


def test_every_chapter_installs_mlbook_from_the_repository_url():
    notebooks = sorted((REPO / "book").glob("*.ipynb"))
    assert notebooks
    for path in notebooks:
        nb = json.loads(path.read_text())
        first = "".join(next(c for c in nb["cells"] if c["cell_type"] == "code")["source"])
        assert f'"mlbook @ git+{URL}"' in first, f"{path.name}: Colab cell does not install {URL}"
        assert set(GITHUB.findall(first)) == {URL}, path.name


def test_readme_and_pyproject_name_the_same_repository():
    readme = (REPO / "README.md").read_text()
    assert URL in readme
    installs = re.findall(r"git\+(https://[^\s\"'`]+)", readme)  # pip install specs
    assert installs and set(installs) == {URL}, installs
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["urls"]["Homepage"] == URL


def test_make_publish_pushes_the_html_with_ghp_import():
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^publish: (.*)\n\t(.*)$", makefile, flags=re.MULTILINE)
    assert recipe, "no publish target in the Makefile"
    assert "book" in recipe.group(1).split()  # builds first
    assert re.fullmatch(r"\$\(BIN\)/ghp-import -n -p -f _build/html", recipe.group(2))
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    book = pyproject["project"]["optional-dependencies"]["book"]
    assert any(dep.startswith("ghp-import") for dep in book)
