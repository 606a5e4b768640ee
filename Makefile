# The two entry points of README.md. Each sets up what it needs (a virtual environment with the pinned
# torch) and then runs. Nothing here needs a GPU or the internet beyond the package registries.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml plugins/tinyworld/pyproject.toml
	command -v redis-server >/dev/null || (apt-get update -q && apt-get install -y -q redis-server)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev]' -e plugins/tinyworld
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/gift demo --out $(or $(OUT),demo-out)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python bench/generator_throughput.py
	$(BIN)/python bench/trainer_step.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache
