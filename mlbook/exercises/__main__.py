"""The student edition of the book's chapters, and offline grading of filled-in notebooks.

``python -m mlbook.exercises student-edition OUT_DIR [NOTEBOOK ...]``
    Copies the chapters (default: every ``.ipynb`` listed in ``_toc.yml``) to ``OUT_DIR``
    without their ``solution`` cells and without outputs; the ``stub`` and ``check`` cells
    stay, so each coding exercise starts from the stub and ends with its checker.
``python -m mlbook.exercises grade NOTEBOOK.ipynb [--exercises-only]``
    Executes a filled-in notebook (errors do not stop the run) and prints one row per
    ``check`` cell: passed, failed with the checker's message, or not reached. With
    ``--exercises-only`` only the ``stub``, ``solution`` and ``check`` cells run, after
    ``import numpy as np, torch``: seconds instead of the chapter's minutes, for functions
    that use nothing else from the chapter. Exits with status 1 unless every check passed.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

#: Cell tags of a coding exercise (cell metadata ``tags``).
STUB, SOLUTION, CHECK = "stub", "solution", "check"
CHECKER = re.compile(r"\b(check_\w+)\s*\(")


def tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def toc_notebooks(root: Path) -> list[Path]:
    """The ``.ipynb`` chapters listed in ``root/_toc.yml``, in book order."""
    toc = root / "_toc.yml"
    if not toc.is_file():
        raise SystemExit(f"no _toc.yml in {root}: pass the notebooks to copy explicitly")
    files = re.findall(r"file:\s*(\S+)", toc.read_text())
    return [root / f"{f}.ipynb" for f in files if (root / f"{f}.ipynb").is_file()]


def student_edition(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``notebook`` without ``solution`` cells and without outputs."""
    out = nbformat.from_dict(notebook)
    out.cells = [c for c in out.cells if SOLUTION not in tags(c)]
    for cell in out.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return out


def write_student_edition(out_dir: Path, notebooks: list[Path]) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in notebooks:
        nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
        target = out_dir / path.name
        nbformat.write(student_edition(nb), target)
        written.append(target)
    return written


def _checker_name(cell) -> str:
    found = CHECKER.findall(cell.source)
    return found[-1] if found else "(check cell without a checker call)"


def check_results(notebook: nbformat.NotebookNode) -> list[tuple[str, str, str]]:
    """``(checker, status, message)`` for every ``check`` cell of an executed notebook."""
    rows = []
    for cell in notebook.cells:
        if CHECK not in tags(cell):
            continue
        name = _checker_name(cell)
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        text = "".join(o.get("text", "") for o in cell.get("outputs", [])
                       if o.get("output_type") == "stream")
        if errors:
            rows.append((name, "FAIL", f"{errors[0].ename}: {errors[0].evalue}"))
        elif f"{name}: passed" in text:
            rows.append((name, "pass", ""))
        else:
            rows.append((name, "not run", "the cell did not run or printed no verdict"))
    return rows


def _exercise_cells_only(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    out = nbformat.from_dict(notebook)
    prelude = nbformat.v4.new_code_cell("import numpy as np\nimport torch")
    out.cells = [prelude] + [c for c in out.cells if c.cell_type == "code"
                             and {STUB, SOLUTION, CHECK} & set(tags(c))]
    return out


def grade(path: Path, exercises_only: bool = False, timeout: int = 900) -> list[tuple]:
    """Execute the notebook at ``path`` (errors allowed) and return its check rows."""
    try:
        from nbclient import NotebookClient
    except ImportError as error:  # part of the book and test extras
        raise SystemExit("grading needs nbclient: pip install 'mlbook[test]'") from error
    nb = nbformat.read(path, as_version=4)
    if exercises_only:
        nb = _exercise_cells_only(nb)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(path.parent.resolve())}})
    client.execute()
    return check_results(nb)


def print_table(path: Path, rows: list[tuple[str, str, str]]) -> None:
    print(f"{path.name}: {sum(r[1] == 'pass' for r in rows)} of {len(rows)} exercises pass")
    width = max([len(r[0]) for r in rows] + [8])
    for name, status, message in rows:
        first_line = message.splitlines()[0] if message else ""
        print(f"  {name:<{width}}  {status:<7}  {first_line[:160]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlbook.exercises",
                                     description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    edition = commands.add_parser("student-edition", help="chapters without solution cells")
    edition.add_argument("out_dir", type=Path)
    edition.add_argument("notebooks", type=Path, nargs="*",
                         help="default: the .ipynb chapters of _toc.yml in the current directory")
    grading = commands.add_parser("grade", help="run filled-in notebooks, print pass/fail")
    grading.add_argument("notebooks", type=Path, nargs="+")
    grading.add_argument("--exercises-only", action="store_true",
                         help="run only the stub, solution and check cells")
    grading.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    args = parser.parse_args(argv)
    if args.command == "student-edition":
        notebooks = args.notebooks or toc_notebooks(Path.cwd())
        for target in write_student_edition(args.out_dir, notebooks):
            print(f"wrote {target}")
        return 0
    all_pass = True
    for path in args.notebooks:
        if not path.is_file():
            raise SystemExit(f"no notebook at {path}")
        rows = grade(path, args.exercises_only, args.timeout)
        print_table(path, rows)
        all_pass &= bool(rows) and all(r[1] == "pass" for r in rows)
    return 0 if all_pass else 1


if __name__ == "__main__":
    sys.exit(main())
