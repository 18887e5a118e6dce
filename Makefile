# Two commands on a fresh machine (Python >= 3.10 and the package registry reachable):
#   make demo   - sets up .venv and runs the built-in demo (writes demo_out/demo.mp4 and previews)
#   make test   - sets up .venv and runs the test suite (fast tests; `make test-slow` for the rest)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-slow lint bench setup

$(BIN)/.installed: pyproject.toml requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/python -m metatalk_jax.demo --out demo_out

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15

lint: $(BIN)/.installed
	$(BIN)/ruff check metatalk_jax configs data_pipelines tests benchmarks launch

test-slow: $(BIN)/.installed
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m slow --durations=25

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/rasterize.py
	$(BIN)/python benchmarks/prepare.py
	$(BIN)/python benchmarks/renderer.py
	$(BIN)/python benchmarks/wav2lip.py
	$(BIN)/python -m benchmarks.a2e
	$(BIN)/python benchmarks/syncnet.py
	$(BIN)/python benchmarks/inception.py
	$(BIN)/python benchmarks/infer.py --background-4k 60
