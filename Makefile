# Two commands for a newcomer: `make demo` and `make test`. Each sets itself up:
# .venv at the repo root is created if missing and reused if present.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ipr-installed
DATA ?= data
ARTIFACTS ?= artifacts/zeroeval

.PHONY: setup demo demo-offline evaluate test test-unit lint bench drift learn band winback onboard soak artifacts schemas config-doc clean

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
	$(PY) -m benchmarks demo --artifacts $(ARTIFACTS) --dataset $(DATA)/zeroeval

# The offline view: the quality-cost table of the zeroeval test split, and its plot.
demo-offline: $(STAMP) $(ARTIFACTS)/manifest.json
	$(VENV)/bin/ipr evaluate --artifacts $(ARTIFACTS) --dataset $(DATA)/zeroeval \
		--json build/eval-zeroeval.json --plot build/eval-zeroeval.png

# Routing quality on every shipped dataset (docs/measurements.md, "Routing quality").
evaluate: $(STAMP) $(ARTIFACTS)/manifest.json
	$(VENV)/bin/ipr evaluate --artifacts $(ARTIFACTS) --dataset $(DATA)/zeroeval --pair auto \
		--json build/eval-zeroeval.json --plot build/eval-zeroeval.png
	$(VENV)/bin/ipr train --dataset $(DATA)/llmrouter --out artifacts/llmrouter
	$(VENV)/bin/ipr evaluate --artifacts artifacts/llmrouter --dataset $(DATA)/llmrouter --pair auto \
		--json build/eval-llmrouter.json --plot build/eval-llmrouter.png
	$(VENV)/bin/ipr evaluate --cv 5 --dataset $(DATA)/routerbench --pair auto \
		--json build/eval-routerbench.json --plot build/eval-routerbench.png

test: $(STAMP)
	$(PY) -m pytest -q -ra tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test-unit: $(STAMP)
	$(PY) -m pytest -q -m "not integration and not model" tests

# Speed (benchmarks, not tests): the router through Kafka against its in-process limit (and again
# in exactly-once mode, build/bench-exactly-once.json, as two router processes,
# build/bench-2-routers.json, and with every prompt traced into a Zipkin server,
# build/bench-traced.json), then what `ipr gateway` adds over a direct call to a backend that
# answers at once (build/bench-gateway.json), then the model's single-prompt latency, batched throughput and training times, then the machine's limit,
# the encoder's profile and how scoring grows with models and memory (and with the kNN index, to
# 1M rows: build/knn-index.json), then how long a router
# takes to route after a start, a SIGTERM restart and a SIGKILL restart (build/startup.json).
bench: $(STAMP) $(ARTIFACTS)/manifest.json
	$(PY) -m benchmarks bench --artifacts $(ARTIFACTS) --dataset $(DATA)/zeroeval --json build/bench.json
	$(PY) -m benchmarks bench --artifacts $(ARTIFACTS) --dataset $(DATA)/zeroeval --exactly-once \
		--rounds 3 --json build/bench-exactly-once.json
	$(PY) -m benchmarks bench --artifacts $(ARTIFACTS) --dataset $(DATA)/zeroeval --routers 2 \
		--rounds 3 --json build/bench-2-routers.json
	$(PY) -m benchmarks bench --artifacts $(ARTIFACTS) --dataset $(DATA)/zeroeval --traced \
		--baseline build/bench.json --json build/bench-traced.json
	$(PY) -m benchmarks gateway-bench --artifacts $(ARTIFACTS) --dataset $(DATA)/zeroeval \
		--json build/bench-gateway.json
	$(PY) -m benchmarks model-bench --artifacts $(ARTIFACTS) --dataset $(DATA)/zeroeval --train --recalibrate \
		--json build/bench-model.json
	$(PY) -m benchmarks scaling --artifacts $(ARTIFACTS) --dataset $(DATA)/zeroeval --json build/scaling.json \
		--plot build/scaling.png
	$(PY) -m benchmarks knn-index --artifacts $(ARTIFACTS) --dataset $(DATA)/zeroeval \
		--json build/knn-index.json
	$(PY) -m benchmarks startup --artifacts $(ARTIFACTS) --dataset $(DATA)/zeroeval --json build/startup.json

# The feedback loop on a real drift (build/drift.json, build/drift.png); about 8 minutes.
drift: $(STAMP) $(ARTIFACTS)/manifest.json
	$(PY) -m benchmarks drift --artifacts $(ARTIFACTS) --dataset $(DATA)/zeroeval

# Learning from live labels (docs/measurements.md): DATASET's test split in a fixed random order
# through router, replay workers and feedback service, the loop on, then off; the last half's
# quality-cost figures with intervals (build/learn.json, build/learn-<DATASET>.json for the others,
# and .png); about 2 minutes on zeroeval, 1.5 on llmrouter (artifacts/<DATASET>, trained if missing).
DATASET ?= zeroeval
LEARN_JSON := $(if $(filter zeroeval,$(DATASET)),build/learn.json,build/learn-$(DATASET).json)
learn: $(STAMP) artifacts/$(DATASET)/manifest.json
	$(PY) -m benchmarks learn --artifacts artifacts/$(DATASET) --dataset $(DATA)/$(DATASET) --json $(LEARN_JSON)

# A drift that ends: labels and exploration until the model wins its traffic back (build/winback.json).
winback: $(STAMP) $(ARTIFACTS)/manifest.json
	$(PY) -m benchmarks winback --artifacts $(ARTIFACTS) --dataset $(DATA)/zeroeval

# The correction band on stationary traffic and on a drift, offline (build/band-<dataset>.json).
band: $(STAMP) artifacts/$(DATASET)/manifest.json
	$(PY) -m benchmarks band --artifacts artifacts/$(DATASET) --dataset $(DATA)/$(DATASET)

# A prices-only model onboarded from explored traffic, offline (benchmarks/onboard.py): labels,
# exploration spend and test-split ARQGC vs the offline artifact per refit (build/onboard.json);
# about 1.5 minutes on zeroeval.
onboard: $(STAMP) artifacts/$(DATASET)/manifest.json
	$(PY) -m benchmarks onboard --artifacts artifacts/$(DATASET) --dataset $(DATA)/$(DATASET) --out build

artifacts/%/manifest.json: | $(STAMP)
	$(VENV)/bin/ipr train --dataset $(DATA)/$* --out artifacts/$*

# Router, workers and feedback service for SOAK_MINUTES at half the end-to-end limit: RSS, lag and
# p99 per minute, and the bar (build/soak.json, build/soak.png); about SOAK_MINUTES + 2 minutes.
SOAK_MINUTES ?= 10
soak: $(STAMP) $(ARTIFACTS)/manifest.json
	$(PY) -m benchmarks soak --artifacts $(ARTIFACTS) --dataset $(DATA)/zeroeval --minutes $(SOAK_MINUTES)

schemas: $(STAMP)
	$(PY) -m schemas.generate

# docs/configuration.md from the settings classes (tests/unit/test_configuration.py checks it).
config-doc: $(STAMP)
	@mkdir -p build
	$(PY) -m streams.cli.config_reference > build/configuration.md
	mv build/configuration.md docs/configuration.md

clean:
	rm -rf build artifacts .pytest_cache
