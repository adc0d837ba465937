"""ONNX reference: onnxruntime on the CPU."""

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
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - depends on the install
        raise ConvertError("verification needs onnxruntime: pip install liteconv[verify]") from None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(source), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    wanted = {i.name for i in sess.get_inputs()}
    results = sess.run(names, {k: v for k, v in feeds.items() if k in wanted})
    return dict(zip(names, results, strict=True))
