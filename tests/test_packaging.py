"""The project's files agree with each other: pyproject, environment.yml, _toc.yml, notebooks."""

import json
import re
import tomllib

import yaml
from conftest import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_environment_yml_installs_this_package_with_the_book_extras():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_entries = [d for d in env["dependencies"] if isinstance(d, dict) and "pip" in d][0]["pip"]
    assert any(re.fullmatch(r"-e \.\[.*book.*\]", e) for e in pip_entries), pip_entries
    py = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")][0]
    assert py.replace("python", "") == PYPROJECT["project"]["requires-python"]


def test_dependencies_use_loose_lower_bounds():
    deps = list(PYPROJECT["project"]["dependencies"])
    for extra in PYPROJECT["project"]["optional-dependencies"].values():
        deps += extra
    for dep in deps:
        assert "==" not in dep, f"exact pin in {dep!r}: use a lower bound"
        assert "2.13" not in dep, f"{dep!r}: torch 2.13.x CPU cannot import torchvision"


def _toc_files():
    return re.findall(r"(?:file|root):\s*(\S+)", (REPO / "_toc.yml").read_text())


def test_toc_entries_exist_and_every_chapter_is_listed():
    listed = set()
    for entry in _toc_files():
        matches = [p for p in (REPO / f"{entry}.md", REPO / f"{entry}.ipynb") if p.is_file()]
        assert matches, f"_toc.yml lists {entry!r} but no .md or .ipynb exists"
        listed.add(matches[0].relative_to(REPO).as_posix())
    on_disk = {p.relative_to(REPO).as_posix() for p in (REPO / "book").glob("*.ipynb")}
    on_disk |= {p.relative_to(REPO).as_posix() for p in (REPO / "book").glob("*.md")}
    assert on_disk <= listed, f"not in _toc.yml: {sorted(on_disk - listed)}"


def test_notebooks_are_stored_without_outputs_and_install_mlbook_first():
    for path in sorted((REPO / "book").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        for cell in code:
            assert not cell.get("outputs"), f"{path.name}: stored with outputs"
            assert cell.get("execution_count") is None, f"{path.name}: stored with counts"
        first = "".join(code[0]["source"])
        assert "import mlbook" in first and "pip" in first, (
            f"{path.name}: the first code cell must install mlbook when it is not importable"
        )


def test_python_floor_is_declared_once():
    """requires-python, ruff's target and environment.yml name the same oldest Python.

    It is 3.11: the only version this project is tested on (and tomllib, used above, is in
    the standard library from 3.11 on).
    """
    floor = re.fullmatch(r">=(\d+)\.(\d+)", PYPROJECT["project"]["requires-python"])
    assert floor, PYPROJECT["project"]["requires-python"]
    major, minor = int(floor.group(1)), int(floor.group(2))
    assert PYPROJECT["tool"]["ruff"]["target-version"] == f"py{major}{minor}"
    assert f"Python {major}.{minor}+" in (REPO / "README.md").read_text()
