"""ONNX reference: onnxruntime on the CPU."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from converter.errors import ConvertError

__all__ = ["run", "run_all"]


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
    opts.log_severity_level = 4  # failures come back as exceptions; don't also log them
    sess = ort.InferenceSession(str(source), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    wanted = {i.name for i in sess.get_inputs()}
    run_opts = ort.RunOptions()
    run_opts.log_severity_level = 4
    results = sess.run(names, {k: v for k, v in feeds.items() if k in wanted}, run_opts)
    return dict(zip(names, results, strict=True))


def run_all(
    source: str | Path,
    feeds: Mapping[str, np.ndarray],
    threads: int = 2,
    max_tensor_bytes: int | None = None,
    **_: Any,
) -> dict[str, np.ndarray]:
    """Every tensor value of the main graph (graph outputs and intermediates) by name.

    A copy of the model lists every node output of the main graph as a graph output
    (typed by ``onnx.shape_inference`` where it can) and runs once. Values whose
    inferred size exceeds ``max_tensor_bytes`` are left out; non-tensor values
    (sequences, maps) and the values of subgraphs are not reported.
    """
    import onnx

    model = onnx.load(str(source))
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - inference is a convenience; ORT types the rest
        inferred = model
    types = {vi.name: vi for vi in [*inferred.graph.value_info, *inferred.graph.output]}
    graph = model.graph
    listed = {o.name for o in graph.output}
    for node in graph.node:
        for name in node.output:
            if not name or name in listed:
                continue
            vi = types.get(name)
            if vi is not None and not _wanted(vi, max_tensor_bytes):
                continue
            graph.output.append(vi if vi is not None else onnx.ValueInfoProto(name=name))
            listed.add(name)
    if model.ByteSize() < _PROTOBUF_LIMIT:
        return _run_session(model.SerializeToString(), feeds, threads)
    with tempfile.TemporaryDirectory(prefix="liteconv_ref_") as tmp:  # weights over 2 GiB
        path = Path(tmp) / "model.onnx"
        onnx.save_model(model, path, save_as_external_data=True, location="weights.bin")
        return _run_session(str(path), feeds, threads)


_PROTOBUF_LIMIT = 2**31 - 1


def _wanted(vi: Any, max_bytes: int | None) -> bool:
    """A tensor value (not a sequence/map) within the size limit."""
    import onnx

    if not vi.type.HasField("tensor_type"):
        return False
    if max_bytes is None:
        return True
    tt = vi.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    if not tt.HasField("shape") or None in dims:
        return True
    np_type = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
    return int(np.prod(dims, dtype=np.int64)) * np.dtype(np_type).itemsize <= max_bytes


def _run_session(
    model: bytes | str, feeds: Mapping[str, np.ndarray], threads: int
) -> dict[str, np.ndarray]:
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - depends on the install
        raise ConvertError("verification needs onnxruntime: pip install liteconv[verify]") from None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 4
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    wanted = {i.name for i in sess.get_inputs()}
    results = sess.run(names, {k: v for k, v in feeds.items() if k in wanted})
    return {n: r for n, r in zip(names, results, strict=True) if isinstance(r, np.ndarray)}
