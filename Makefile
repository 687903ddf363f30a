# embedcam: `make demo` runs the main job, `make test` runs every check. Both create .venv.
# `make test` = ruff, ruff format, mypy, pytest (with doctests), mkdocs --strict; `make figures` rewrites the dataset figures of the docs.
PYTHON ?= python3
export NO_MKDOCS_2_WARNING := 1
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck docs figures clean venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) benchmarks/sku.py --preset quick --out outputs/sku

lint: $(STAMP)
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy embedcam

docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict --site-dir site

figures: $(STAMP)
	$(PY) docs/figures.py docs/img

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check embedcam tests benchmarks examples docs/figures.py
	$(VENV)/bin/mypy embedcam
	$(PY) -m pytest -q
	$(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf site build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache
