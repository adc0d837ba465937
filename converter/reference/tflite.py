"""TFLite reference: LiteRT's Python interpreter (``ai_edge_litert``) on the CPU.

Inputs are matched by tensor name; an input fed with another shape than the model's
(``--inputShape``) is resized before tensors are allocated.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from converter.errors import ConvertError

__all__ = ["run", "run_all"]


def run(
    source: str | Path, feeds: Mapping[str, np.ndarray], threads: int = 2, **_: Any
) -> dict[str, np.ndarray]:
    interp = _interpreter(source, threads)
    _invoke(interp, feeds)
    return {d["name"]: np.array(interp.get_tensor(d["index"])) for d in interp.get_output_details()}


def run_all(
    source: str | Path, feeds: Mapping[str, np.ndarray], threads: int = 2, **_: Any
) -> dict[str, np.ndarray]:
    """Every tensor of the main subgraph after one run, by tensor name.

    LiteRT keeps intermediates with ``experimental_preserve_all_tensors``. Quantized
    tensors (int8/uint8/int16 with scales) come back DEQUANTIZED to float32 (per-axis
    parameters honoured) so they compare with any precision; tensors without data are
    skipped.
    """
    interp = _interpreter(source, threads, preserve=True)
    _invoke(interp, feeds)
    out: dict[str, np.ndarray] = {}
    for d in interp.get_tensor_details():
        try:
            arr = np.array(interp.get_tensor(d["index"]))
        except ValueError:  # no data (e.g. a scratch or unused tensor)
            continue
        out.setdefault(d["name"], _dequantized(arr, d.get("quantization_parameters") or {}))
    return out


def _dequantized(arr: np.ndarray, q: Mapping[str, Any]) -> np.ndarray:
    scales = np.asarray(q.get("scales", ()), np.float32)
    if arr.dtype not in (np.int8, np.uint8, np.int16) or scales.size == 0:
        return arr
    zps = np.asarray(q.get("zero_points", ()), np.float32)
    if zps.size == 0:
        zps = np.zeros_like(scales)
    shape = [1] * arr.ndim
    if scales.size > 1 and arr.ndim:
        shape[int(q.get("quantized_dimension", 0))] = -1
    return (arr.astype(np.float32) - zps.reshape(shape)) * scales.reshape(shape)


def _interpreter(source: str | Path, threads: int, preserve: bool = False) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - depends on the install
        raise ConvertError("verification needs LiteRT: pip install ai-edge-litert") from None
    with warnings.catch_warnings():  # preserve_all_tensors warns that it is for debugging
        warnings.simplefilter("ignore", UserWarning)
        return Interpreter(
            model_path=str(source), num_threads=threads, experimental_preserve_all_tensors=preserve
        )


def _invoke(interp: Any, feeds: Mapping[str, np.ndarray]) -> None:
    inputs = interp.get_input_details()
    resized = False
    for d in inputs:
        arr = feeds.get(d["name"])
        if arr is not None and tuple(arr.shape) != tuple(d["shape"]):
            interp.resize_tensor_input(d["index"], list(arr.shape), strict=False)
            resized = True
    interp.allocate_tensors()
    if resized:
        inputs = interp.get_input_details()
    for d in inputs:
        if d["name"] not in feeds:
            raise ConvertError(f"no data for model input {d['name']!r}")
        interp.set_tensor(d["index"], np.asarray(feeds[d["name"]], dtype=d["dtype"]))
    interp.invoke()
