PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
JOBS ?= 2

.PHONY: install test test-fast lint demo bench clean

install:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[all,test]'

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
