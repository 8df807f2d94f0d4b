# Enclave: `make run` sets everything up and serves the demo corpus; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?= data
HOST ?= 127.0.0.1
PORT ?= 8000
# CMake flags for llama-cpp-python's build (pip's CMAKE_ARGS). Empty: llama.cpp's defaults, a
# build tuned to this CPU. For a build made once and deployed on other CPUs, see
# docs/deployment.md ("Building llama.cpp for many machines").
LLAMA_CMAKE_ARGS ?=
LLAMA_CPP := $(shell grep -om1 'llama-cpp-python==[0-9.]*' pyproject.toml)

.PHONY: install llama-cpp run serve ingest-demo test test-unit test-scaleout lint bench eval corpus clean chromium postgresql redis-server ocr screenshots

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	# CPU torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install -c constraints.txt torch==2.13.0
	# llama-cpp-python compiles from source (6-10 min on 2 cores); pip caches the wheel.
ifneq ($(strip $(LLAMA_CMAKE_ARGS)),)
	$(MAKE) llama-cpp
endif
	$(BIN)/pip install -c constraints.txt -e '.[dev,legacy]'
	# unstructured's pdf extra drags in torchvision, whose PyPI build cannot load beside the
	# CPU torch and breaks `import transformers`; the fast PDF path never uses it.
	$(BIN)/pip uninstall --yes --quiet torchvision
	touch $(STAMP)

install: $(STAMP)

# Rebuild llama-cpp-python with LLAMA_CMAKE_ARGS, never from pip's cached wheel (pip keys its
# cache by version, not by flags): `make llama-cpp LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF ..."`.
llama-cpp:
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install --no-cache-dir --force-reinstall \
	  --no-deps -c constraints.txt '$(LLAMA_CPP)'

ingest-demo: install ocr
	$(BIN)/enclave ingest corpora/demo --data $(DATA)

serve: install ocr
	$(BIN)/enclave serve --data $(DATA) --host $(HOST) --port $(PORT)

run: ingest-demo serve

# The browser tests drive Debian's Chromium (never a browser downloaded by playwright).
chromium:
	@test -x /usr/bin/chromium || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  $$SUDO apt-get install -y --no-install-recommends chromium fonts-inter; }

# The store tests also run against PostgreSQL: a throwaway cluster made from Debian's server
# binaries (initdb, pg_ctl, postgres) in a temp dir, on loopback.
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  $$SUDO apt-get install -y --no-install-recommends postgresql; }

# Scanned PDFs and images are read by Debian's Tesseract (with its English pack) and Poppler's
# pdftoppm; more languages: apt-get install tesseract-ocr-<lang>, then set ocr_languages.
ocr:
	@{ command -v tesseract && command -v pdftoppm && \
	   tesseract --list-langs 2>/dev/null | grep -qx eng; } >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  $$SUDO apt-get install -y --no-install-recommends tesseract-ocr tesseract-ocr-eng \
	    poppler-utils; }

# The scale-out test (pytest -m scaleout) starts Debian's redis-server on loopback.
redis-server:
	@command -v redis-server >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  $$SUDO apt-get install -y --no-install-recommends redis-server; }

test: install chromium postgresql redis-server ocr
	$(BIN)/python -m pytest -q

test-scaleout: install postgresql redis-server
	$(BIN)/python -m pytest -q -m scaleout

# Re-take the README's screenshots (docs/screenshots) with the browser tests.
screenshots: install chromium
	ENCLAVE_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest -q tests/browser

test-unit: install postgresql redis-server ocr
	$(BIN)/python -m pytest -q tests/unit

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check config retriever ingest service server cli
	$(BIN)/mypy

EVAL ?= ../shared/eval

# Speed against the physical baselines, each measured in the same run (see benchmarks/README.md).
# The 100k-chunk retrieval index is built once into $(BENCH_CACHE) (about 12 minutes on 2 idle cores).
BENCH_CACHE ?= data/bench
BENCH := ENCLAVE_BENCH_CACHE=$(BENCH_CACHE) ENCLAVE_EVAL=$(EVAL) $(BIN)/python

bench: install ocr
	mkdir -p benchmarks/results
	for mode in generative extractive; do \
	  $(BIN)/enclave eval answers --qa corpora/demo --mode $$mode --json \
	    | tail -n 1 > benchmarks/results/answers-demo-$$mode.json; done
	$(BENCH) benchmarks/embedder.py
	$(BENCH) benchmarks/ingest.py
	$(BENCH) benchmarks/ocr.py
	$(BENCH) benchmarks/retrieve.py
	$(BENCH) benchmarks/generate.py
	ENCLAVE_LLM_FAST_CPU_WEIGHTS=false ENCLAVE_LLM_FLASH_ATTENTION=false \
	  $(BENCH) benchmarks/generate.py --out generate-as-shipped
	$(BENCH) benchmarks/serve.py
	$(BENCH) benchmarks/plots.py
	$(MAKE) eval

# Retrieval quality on the third-party sets beside the repo (never copied into it).
eval: install
	mkdir -p benchmarks/results
	for mode in dense bm25 hybrid; do \
	  $(BIN)/enclave eval retrieval --beir $(EVAL)/scifact --mode $$mode --json \
	    | tail -n 1 > benchmarks/results/retrieval-beir-$$mode.json; done
	$(BIN)/enclave eval retrieval --qa $(EVAL)/rag-mini-wikipedia --json \
	  | tail -n 1 > benchmarks/results/retrieval-qa.json

corpus: install
	$(BIN)/python corpora/build_demo.py

clean:
	rm -rf $(VENV) $(DATA) .pytest_cache .mypy_cache .ruff_cache
