PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0

.PHONY: demo test install clean bench

$(BIN)/trainmedic: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/trainmedic

demo: install
	$(BIN)/trainmedic demo --bug lr-too-high

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/overhead.py

clean:
	rm -rf $(VENV) trainmedic-runs .pytest_cache
