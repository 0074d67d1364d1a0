# mlbook: the two commands are `make book` and `make test` (see README.md).
# Everything runs inside .venv, created on first use.

PYTHON_BOOTSTRAP ?= python3
VENV             ?= .venv
BIN              := $(VENV)/bin
PY               := $(BIN)/python
STAMP            := $(VENV)/.mlbook-installed

# Raw data: ../shared/data when this checkout sits beside it (CI), else the reader's own
# MLBOOK_DATA, else the cache (loaders download there). Derived files go under _build/cache
# unless MLBOOK_CACHE says otherwise, so a clean clone starts clean.
ifeq ($(origin MLBOOK_DATA), undefined)
  ifneq ($(wildcard ../shared/data),)
    export MLBOOK_DATA := $(abspath ../shared/data)
  endif
endif
export MLBOOK_CACHE ?= $(abspath _build/cache)
export PYTHONHASHSEED := 0

# Notebooks are the .ipynb chapters listed in _toc.yml, in book order.
NOTEBOOKS = $(shell $(PY) -c "import re,pathlib;print(' '.join(f+'.ipynb' for f in re.findall(r'file:\s*(\S+)', pathlib.Path('_toc.yml').read_text()) if pathlib.Path(f+'.ipynb').is_file()))")

.PHONY: install book test unit nbval strict lint lab clean publish exercises translations

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON_BOOTSTRAP) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[book,test,dev]'
	@touch $(STAMP)

install: $(STAMP)

# Chapters run two at a time (JOBS), each kernel on one thread, longest first by the seconds
# the last nbval run recorded (.ci/nbval_timing.py): about half the serial time on two cores.
JOBS       ?= 2
ONE_THREAD := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

## book: execute every chapter (cached) and build the HTML into _build/html
# The chapters that changed are executed JOBS at a time into the build's execution cache first,
# so that jupyter-book (execute_notebooks: cache) finds them all there and executes none.
book: $(STAMP)
	$(PY) .ci/execute_book.py --jobs $(JOBS) --cache _build/.jupyter_cache $(NOTEBOOKS)
	$(BIN)/jupyter-book build . --path-output . --builder html
	$(PY) .ci/translations.py config _build/zh_config.yml
	$(BIN)/jupyter-book build . --path-output _build/zh --builder html --config _build/zh_config.yml
	rm -rf _build/html/zh_CN && cp -r _build/zh/_build/html _build/html/zh_CN
	MLBOOK_HTML=_build/html $(BIN)/pytest -q -p no:cacheprovider tests/test_rendered_html.py tests/test_browser.py
	@echo "Open _build/html/index.html (English) or _build/html/zh_CN/index.html (中文)"

## test: ruff, unit tests, every notebook under nbval, and a strict (warnings-as-errors) build
test: lint unit nbval strict

# unit: two workers; loadfile keeps a test file on one worker, so module-scoped fixtures (the
# two-process runs of test_meta_distributed) are built once, not once per worker.
unit: $(STAMP)
	$(BIN)/pytest -n $(JOBS) --dist loadfile tests -q

# nbval: each notebook is one kernel on one xdist worker (loadfile); .ci/nbval_timing.py hands
# them out longest first and prints every chapter's seconds, their sum and the wall time;
# --durations lists the heaviest cells.
nbval: $(STAMP)
	@if [ -z "$(NOTEBOOKS)" ]; then echo "no notebooks listed in _toc.yml"; else \
	  echo "nbval on: $(NOTEBOOKS)"; \
	  $(ONE_THREAD) PYTHONPATH=$(abspath .ci)$${PYTHONPATH:+:$$PYTHONPATH} \
	  $(BIN)/pytest -n $(JOBS) --dist loadfile --no-loadscope-reorder -p nbval_timing \
	    --nbval-lax --nbval-cell-timeout=900 -p no:cacheprovider --durations=20 $(NOTEBOOKS) -q; fi

# The strict build reuses _config.yml with execution switched off (nbval already ran the
# chapters): broken cross-references, citations and toc entries fail it. After each build,
# tests/test_rendered_html.py scans its pages for machine paths, stderr blocks and warnings
# (the executed outputs are only in `make book`'s _build/html, so `book` scans those), and
# tests/test_browser.py opens pages in headless Chromium: formulas typeset offline, nothing
# loaded from outside the build.
strict: $(STAMP)
	@mkdir -p _build
	$(PY) .ci/translations.py config _build/strict_config.yml --no-execute --english
	$(BIN)/jupyter-book build . --path-output _build/strict --builder html --all --warningiserror --keep-going --config _build/strict_config.yml
	$(PY) .ci/translations.py config _build/zh_strict_config.yml --no-execute
	$(BIN)/jupyter-book build . --path-output _build/strict_zh --builder html --all --warningiserror --keep-going --config _build/zh_strict_config.yml
	MLBOOK_HTML=_build/strict/_build/html:_build/strict_zh/_build/html $(BIN)/pytest -q -p no:cacheprovider tests/test_rendered_html.py tests/test_browser.py

## publish: build the book (both editions), then push _build/html to the gh-pages branch that GitHub Pages
## serves, as Jupyter Book documents it (-n: add .nojekyll, -p: push, -f: replace the branch).
publish: book
	$(BIN)/ghp-import -n -p -f _build/html

## exercises: the student edition, every chapter without its solution cells, in _build/exercises
## (grade a filled-in one with: $(PY) -m mlbook.exercises grade NOTEBOOK.ipynb)
exercises: $(STAMP)
	$(PY) -m mlbook.exercises student-edition _build/exercises $(NOTEBOOKS)

## translations: after changing English text, merge it into the Chinese catalogues
## (book/locales/zh_CN; see its README.md), then list what is left to translate
translations: $(STAMP)
	$(PY) .ci/translations.py update

lint: $(STAMP)
	$(BIN)/ruff check .

lab: $(STAMP)
	$(BIN)/jupyter lab book/

clean:
	rm -rf _build
