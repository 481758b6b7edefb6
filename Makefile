# modelserve: `make serve` serves the bundled examples, `make test` runs every check. Both set up what
# they need (a virtual environment in .venv, the example models) on a fresh clone.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
MODELS := examples/models/iris/1/model.onnx examples/models/iris_sklearn/1/model.skops \
          examples/models/digits_mlp/1/model.onnx

.PHONY: all venv examples serve test lint typecheck importlint unit bench bench-batching clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

$(MODELS) &: examples/build_models.py $(STAMP)
	$(BIN)/python examples/build_models.py --out examples/models

examples: $(MODELS)

serve: examples
	$(BIN)/modelserve serve --model-repository examples/models

lint: venv
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: venv
	$(BIN)/mypy

importlint: venv
	$(BIN)/lint-imports

unit: examples
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

clean:
	rm -rf $(VENV) .bench .pytest_cache .mypy_cache .ruff_cache
	find examples/models -name '*.onnx' -o -name '*.skops' | xargs -r rm -f
