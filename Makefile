# The two entry points of README.md. Each sets up what it needs (a virtual environment with exactly the versions of
# requirements/lock.txt) and then runs. Nothing here needs a GPU or the internet beyond the package registries.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ROLES  := client api worker trainer
# One resolution for Linux x86_64 and CPython 3.11 (the images' platform too); role files are projections of it.
COMPILE = $(BIN)/uv pip compile --quiet --generate-hashes --python-version 3.11 \
	--python-platform x86_64-manylinux_2_28 --no-emit-package gift --no-emit-package gift-tinyworld \
	--custom-compile-command "make lock"

.PHONY: demo test check bench setup lock clean

setup: $(STAMP)

# Only hashed, pinned files from the lock; then the two local projects themselves, without resolving anything.
$(STAMP): requirements/lock.txt pyproject.toml plugins/tinyworld/pyproject.toml
	command -v redis-server >/dev/null || (apt-get update -q && apt-get install -y -q redis-server)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -q && apt-get install -y -q chromium chromium-driver)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements/lock.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e . -e plugins/tinyworld
	touch $(STAMP)

# Re-resolve after a change of pyproject.toml: versions already locked stay unless the ranges exclude them
# (`make lock UPGRADE=--upgrade` takes the newest allowed). Each role's file is resolved within the full lock.
lock: $(STAMP)
	$(COMPILE) $(UPGRADE) requirements/lock.in -o requirements/lock.txt
	for role in $(ROLES); do \
		$(COMPILE) requirements/$$role.in -c requirements/lock.txt -o requirements/$$role.txt || exit 1; \
	done

demo: $(STAMP)
	$(BIN)/gift demo --out $(or $(OUT),demo-out)

test: check
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The static checks, also run by the pre-commit hooks (.pre-commit-config.yaml): style, format, import rules, types.
check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/generator_throughput.py
	$(BIN)/python bench/trainer_step.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache .mypy_cache
