"""TFLite reference: LiteRT's Python interpreter (``ai_edge_litert``) on the CPU.

Inputs are matched by tensor name; an input fed with another shape than the model's
(``--inputShape``) is resized before tensors are allocated.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from converter.errors import ConvertError

__all__ = ["run"]


def run(
    source: str | Path, feeds: Mapping[str, np.ndarray], threads: int = 2, **_: Any
) -> dict[str, np.ndarray]:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - depends on the install
        raise ConvertError("verification needs LiteRT: pip install ai-edge-litert") from None
    interp = Interpreter(model_path=str(source), num_threads=threads)
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
    return {d["name"]: np.array(interp.get_tensor(d["index"])) for d in interp.get_output_details()}
