"""Reference runtimes: run a source model in its own framework for verification.

One module per framework (``onnx``, ``tflite``, ``tf``, ``caffe``), each with
``run(source, feeds, threads=2, **options) -> dict[output name, array]``.
Output names are the names the front end gives the IR graph's outputs, so
results compare by name. ``run_all`` (same arguments) returns the intermediate
values too, keyed by the names the front end gives the IR values, for per-layer
comparison (``liteconv compare``).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["NAMES", "run_reference", "run_reference_all"]

_MODULES = {"ONNX": "onnx", "TFLITE": "tflite", "TF": "tf", "CAFFE": "caffe"}
NAMES = {"ONNX": "onnxruntime", "TFLITE": "LiteRT", "TF": "TensorFlow", "CAFFE": "caffe reference"}


def _module(fmk: str) -> Any:
    name = _MODULES.get(fmk.upper())
    if name is None:
        raise ValueError(f"no reference runtime for --fmk={fmk}")
    return importlib.import_module(f"converter.reference.{name}")


def run_reference(
    source: str | Path,
    fmk: str,
    feeds: Mapping[str, np.ndarray],
    threads: int = 2,
    **options: Any,
) -> dict[str, np.ndarray]:
    """Run ``source`` in the reference runtime of ``fmk``."""
    return _module(fmk).run(source, feeds, threads=threads, **options)


def run_reference_all(
    source: str | Path,
    fmk: str,
    feeds: Mapping[str, np.ndarray],
    threads: int = 2,
    **options: Any,
) -> dict[str, np.ndarray]:
    """Every value the reference runtime of ``fmk`` exposes (``run_all``), by name."""
    return _module(fmk).run_all(source, feeds, threads=threads, **options)
