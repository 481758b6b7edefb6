# modelserve: `make serve` serves the bundled examples, `make test` runs every check. Both set up what
# they need (a virtual environment in .venv, the example models) on a fresh clone.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Two stamps: serving needs the package and what examples/build_models.py imports (the `examples` extra);
# the checks add the `dev` extra on top, so `make test` after `make serve` installs only the dev tools.
SERVE_STAMP := $(VENV)/.serve-stamp
DEV_STAMP   := $(VENV)/.dev-stamp
MODELS := examples/models/iris/1/model.onnx examples/models/iris_sklearn/1/model.skops \
          examples/models/digits_mlp/1/model.onnx examples/models/iris/1.profile.json

.PHONY: all serve-venv venv system-deps examples serve test lint typecheck importlint unit bench bench-batching bench-observability bench-overload clean

all: test

$(SERVE_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[examples]'
	touch $(SERVE_STAMP)

$(DEV_STAMP): $(SERVE_STAMP)
	$(BIN)/pip install --quiet -e '.[examples,dev]'
	touch $(DEV_STAMP)

# serve-venv: what `make serve` needs; venv: everything `make test` needs.
serve-venv: $(SERVE_STAMP)

venv: $(DEV_STAMP)

# Tools the tests drive for real: Prometheus (promtool checks deploy/ rules; one test scrapes the server) and
# headless Chromium with its driver (the dashboard test). Debian packages, installed once when missing.
SYSTEM_TOOLS := /usr/bin/promtool /usr/bin/prometheus /usr/bin/chromium /usr/bin/chromedriver
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

system-deps:
	@missing=0; for tool in $(SYSTEM_TOOLS); do [ -x $$tool ] || missing=1; done; \
	if [ $$missing = 1 ]; then \
	  echo "installing Debian packages: prometheus chromium chromium-driver"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
	    prometheus chromium chromium-driver >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y \
	    --no-install-recommends prometheus chromium chromium-driver >/dev/null; }; \
	fi

$(MODELS) &: examples/build_models.py $(SERVE_STAMP)
	$(BIN)/python examples/build_models.py --out examples/models

examples: $(MODELS)

serve: examples
	$(BIN)/modelserve serve --config examples/modelserve.yaml

lint: venv
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: venv
	$(BIN)/mypy

importlint: venv
	$(BIN)/lint-imports

unit: venv examples system-deps
	$(BIN)/pytest

test: lint typecheck importlint unit

# modelserve vs MLServer with perf_analyzer (installs both tools under .bench/ on first use).
bench: examples
	bash bench/setup.sh
	$(BIN)/python bench/run_core.py

# Dynamic batching: digits_mlp with each batch policy vs MLServer's adaptive batching, iris, and the
# in-process onnxruntime ceiling; also draws docs/bench/batching.png.
bench-batching: examples
	bash bench/setup.sh
	$(BIN)/python bench/run_batching.py

# What metrics + 1 % prediction log + drift cost at concurrency 32 on iris (on vs off, MLServer for scale).
bench-observability: examples
	bash bench/setup.sh
	$(BIN)/python bench/run_observability.py
	$(BIN)/python bench/observability_costs.py

# Overload: goodput, rejections and their latency at 1x, 8x and 32x capacity (32, 256, 1,024 closed-loop
# clients), REST and gRPC, modelserve vs MLServer, with a light client, a liveness probe and recovery (~5 min).
# The short version runs in `make test` (tests/transport/test_overload.py).
bench-overload: examples
	bash bench/setup.sh
	$(BIN)/python bench/run_overload.py

clean:
	rm -rf $(VENV) .bench .pytest_cache .mypy_cache .ruff_cache
	find examples/models -name '*.onnx' -o -name '*.skops' | xargs -r rm -f
