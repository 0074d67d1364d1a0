"""Execute the book's chapters two at a time into Jupyter Book's execution cache.

``make book`` runs this before ``jupyter-book build``: the build (``execute_notebooks: cache``)
then finds every chapter in ``_build/.jupyter_cache`` and executes none, where on its own it
would execute them one after another. Chapters already cached with their current code are
skipped; the others run in ``--jobs`` kernels at once (each on one thread, as under
``make nbval``), longest first by the seconds recorded by nbval (see ``nbval_timing.py``).
They are executed as Jupyter Book does it (jupyter-cache's ``single_nb_execution`` in the
notebook's folder, with the timeout and ``allow_errors`` of ``_config.yml``) and stored by
this process alone, so the cache's database has a single writer.

Usage: ``python .ci/execute_book.py [--cache _build/.jupyter_cache] [--jobs 2] NOTEBOOK...``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import nbformat
import yaml
from jupyter_cache import get_cache
from jupyter_cache.base import CacheBundleIn
from jupyter_cache.executors.utils import single_nb_execution
from nbval_timing import REPO, recorded_seconds


def execute(path: str, timeout: int | None, allow_errors: bool) -> tuple[str, str, float, str]:
    """Run one notebook in its folder: ``(path, executed notebook as JSON, seconds, error)``."""
    nb = nbformat.read(path, as_version=4)
    result = single_nb_execution(nb, cwd=str(Path(path).parent.absolute()), timeout=timeout,
                                 allow_errors=allow_errors, meta_override=True)
    return path, nbformat.writes(result.nb), result.time, result.exc_string or ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", help="the chapters, as paths from the repository")
    parser.add_argument("--cache", default="_build/.jupyter_cache",
                        help="jupyter-cache folder the build reads (default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=2, help="kernels at once (default: 2)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")

    execution = yaml.safe_load((REPO / "_config.yml").read_text()).get("execute", {})
    timeout, allow_errors = execution.get("timeout", 30), execution.get("allow_errors", False)
    cache = get_cache(args.cache)
    todo = []
    for path in args.notebooks:
        try:
            cache.match_cache_notebook(nbformat.read(path, as_version=4))
            print(f"cached      {path}")
        except KeyError:
            todo.append(path)
    seconds = recorded_seconds()
    todo.sort(key=lambda p: -seconds.get(p, float("inf")))  # unknown first, then longest
    if not todo:
        return 0

    # One intra-op thread per kernel, so that `jobs` kernels share the cores without
    # oversubscribing them (the kernels inherit this environment).
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    print(f"executing {len(todo)} chapter(s), {args.jobs} at a time: {' '.join(todo)}",
          flush=True)
    start, failed = time.perf_counter(), []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(execute, path, timeout, allow_errors) for path in todo]
        for future in as_completed(futures):
            path, executed, took, error = future.result()
            if error:
                failed.append(path)
                print(f"FAILED      {path} after {took:.0f} s\n{error}", flush=True)
                continue
            uri = cache.add_nb_to_project(path).uri
            cache.cache_notebook_bundle(
                CacheBundleIn(nbformat.reads(executed, as_version=4), uri,
                              data={"execution_seconds": took}),
                check_validity=False, overwrite=True)
            print(f"{took:7.1f} s   {path}", flush=True)
    print(f"{time.perf_counter() - start:7.1f} s   wall for {len(todo)} chapter(s)")
    if failed:
        print(f"chapters that failed: {' '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
