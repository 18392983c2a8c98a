# Two commands for a newcomer: `make demo` and `make test`. Each sets itself up:
# .venv at the repo root is created if missing and reused if present.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ipr-installed
DATA ?= ../shared/data
ARTIFACTS ?= artifacts/zeroeval

.PHONY: setup demo demo-offline test test-unit bench drift artifacts schemas clean

setup: $(STAMP)

# Reinstall only when the dependency list or the lock changes.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[train,dev]'
	@touch $(STAMP)

$(ARTIFACTS)/manifest.json: | $(STAMP)
	$(VENV)/bin/ipr train --dataset $(DATA)/zeroeval --out $(ARTIFACTS)

artifacts: $(ARTIFACTS)/manifest.json

demo: $(STAMP) $(ARTIFACTS)/manifest.json
	$(VENV)/bin/ipr demo --artifacts $(ARTIFACTS) --dataset $(DATA)/zeroeval

demo-offline: $(STAMP) $(ARTIFACTS)/manifest.json
	@mkdir -p build
	$(VENV)/bin/ipr evaluate --artifacts $(ARTIFACTS) --dataset $(DATA)/zeroeval --split test \
		--json build/eval-zeroeval.json --plot build/eval-zeroeval.png

test: $(STAMP)
	$(PY) -m pytest -q -ra tests

test-unit: $(STAMP)
	$(PY) -m pytest -q -m "not integration and not model" tests

bench: $(STAMP) $(ARTIFACTS)/manifest.json
	@mkdir -p build
	$(PY) -m ipr_model.bench --artifacts $(ARTIFACTS) --dataset $(DATA)/zeroeval --json build/bench-model.json

schemas: $(STAMP)
	$(PY) -m schemas.generate

clean:
	rm -rf build artifacts .pytest_cache
