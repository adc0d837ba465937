"""Reading ONNX files: the model proto, tensors (inline and external) and inferred types.

- :func:`load_model` reads a file with ``load_external_data=False``; every failure
  (missing file, protobuf decode error, not a model) becomes :class:`BadModelError`.
- :class:`TensorReader` turns ``TensorProto`` into NumPy arrays without copying where it
  can: raw data is viewed with ``np.frombuffer``; external data is a view into one
  read-only memory map per data file, so models over 2 GB never sit in one bytes object.
  External ``location`` must be relative and resolve (after symlinks) inside the model's
  folder. Packed 4-bit tensors are unpacked (one element per byte, ml_dtypes types).
- :func:`infer_value_types` runs ONNX shape inference (with data propagation) on a light
  copy of the graph, in which large or external initializers are replaced by typed graph
  inputs, and returns that inferred graph (same nodes, plus ``value_info``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from ir import DataType, Shape
from parsers.errors import BadModelError, InputShapeError, UnsupportedModelError
from parsers.onnx.wire import SplitModel, split_raw_data

__all__ = [
    "LoadedModel",
    "TensorReader",
    "infer_value_types",
    "load_model",
    "elem_type_name",
    "type_info",
    "unknown_elem_type",
]

logger = logging.getLogger(__name__)

_PACKED_4BIT = {DataType.INT4, DataType.UINT4, DataType.FLOAT4E2M1}
_SMALL_INIT_BYTES = 1 << 16  # initializers kept for data propagation during inference
_SPLIT_FILE_BYTES = 64 << 20  # files this big keep their raw_data in a memory map


@dataclass
class LoadedModel:
    proto: onnx.ModelProto
    base_dir: Path | None  # folder external data is relative to (None: given a proto)
    source: str  # the path, or "<ModelProto>"
    split: SplitModel | None = None  # large raw_data left in the mapped file (wire.py)


def load_model(model: str | os.PathLike | onnx.ModelProto) -> LoadedModel:
    """Read the model proto (external data stays on disk)."""
    split: SplitModel | None = None
    if isinstance(model, onnx.ModelProto):
        proto, base, source = model, None, "<ModelProto>"
    else:
        path = Path(model)
        source = str(path)
        if not path.is_file():
            raise BadModelError(f"ONNX model {source!r} does not exist or is not a file")
        split = split_raw_data(path) if path.stat().st_size >= _SPLIT_FILE_BYTES else None
        if split is not None:
            try:
                proto = onnx.ModelProto.FromString(split.stripped)
                split.stripped = b""
            except DecodeError:
                split = None
        try:
            if split is None:
                proto = onnx.load(str(path), load_external_data=False)
        except (DecodeError, RuntimeError, ValueError, OSError, UnicodeDecodeError) as exc:
            raise BadModelError(
                f"ONNX model {source!r} is truncated or corrupt and cannot be decoded ({exc})"
            ) from None
        base = path.resolve().parent
    if not proto.HasField("graph") or not (proto.graph.node or proto.graph.output):
        raise BadModelError(f"{source!r} is not an ONNX model (it holds no graph)")
    return LoadedModel(proto, base, source, split)


class TensorReader:
    """Converts TensorProtos to arrays, mapping external data files read-only."""

    def __init__(self, base_dir: Path | None, source: str, split: SplitModel | None = None) -> None:
        self.base_dir = base_dir
        self.source = source
        self.split = split
        self._maps: dict[Path, np.memmap] = {}

    def to_numpy(self, tensor: onnx.TensorProto) -> np.ndarray:
        try:
            dtype = DataType(tensor.data_type)
            np_dtype = dtype.numpy
        except (ValueError, TypeError):
            raise UnsupportedModelError(
                f"{self.source}: tensor {tensor.name!r} has data type "
                f"{elem_type_name(tensor.data_type)}, which liteconv does not support"
            ) from None
        shape = tuple(int(d) for d in tensor.dims)
        count = int(np.prod(shape, dtype=np.int64))
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raw: np.ndarray | bytes = self._external(tensor, dtype, count)
        elif tensor.HasField("raw_data"):
            raw = tensor.raw_data
        elif self.split is not None and tensor.name in self.split.spans:
            offset, length = self.split.spans[tensor.name]
            raw = np.frombuffer(self.split.buffer, np.uint8, length, offset)
        else:
            return self._typed_fields(tensor, np_dtype, shape)
        if dtype in _PACKED_4BIT:
            return _unpack_4bit(np.frombuffer(raw, np.uint8), dtype, count).reshape(shape)
        if dtype == DataType.STRING:
            raise BadModelError(f"{self.source}: string tensor {tensor.name!r} has raw data")
        nbytes = count * np_dtype.itemsize
        if len(raw) != nbytes:
            raise BadModelError(
                f"{self.source}: tensor {tensor.name!r} holds {len(raw)} bytes, "
                f"its shape {list(shape)} needs {nbytes}"
            )
        return np.frombuffer(raw, dtype=np_dtype, count=count).reshape(shape)

    def _typed_fields(
        self, tensor: onnx.TensorProto, np_dtype: np.dtype, shape: tuple[int, ...]
    ) -> np.ndarray:
        try:
            arr = numpy_helper.to_array(tensor)
        except (ValueError, TypeError) as exc:
            raise BadModelError(f"{self.source}: tensor {tensor.name!r}: {exc}") from None
        if arr.dtype == np.dtype(object):
            return np.array(
                [s.decode("utf-8", "replace") if isinstance(s, bytes) else s for s in arr.flat],
                dtype=object,
            ).reshape(shape)
        return arr.astype(np_dtype, copy=False).reshape(shape)

    def _external(self, tensor: onnx.TensorProto, dtype: DataType, count: int) -> np.ndarray:
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        path = self._resolve(tensor.name, location)
        mm = self._map(path, tensor.name)
        offset = int(info.get("offset", 0) or 0)
        nbytes = (count + 1) // 2 if dtype in _PACKED_4BIT else count * dtype.itemsize
        length = int(info["length"]) if info.get("length") else nbytes
        if length != nbytes or offset < 0 or offset + length > mm.size:
            raise BadModelError(
                f"{self.source}: external data of tensor {tensor.name!r} ({location!r}, "
                f"offset {offset}, length {length}) does not fit the file ({mm.size} bytes) "
                f"or the tensor ({nbytes} bytes)"
            )
        return mm[offset : offset + length]

    def _resolve(self, name: str, location: str) -> Path:
        if self.base_dir is None:
            raise BadModelError(
                f"tensor {name!r} uses external data {location!r}: pass the model path "
                "(not a ModelProto) so the data can be found"
            )
        if not location or os.path.isabs(location) or Path(location).is_absolute():
            raise BadModelError(
                f"{self.source}: external data location {location!r} of tensor {name!r} "
                "escapes the model folder (it must be a relative path)"
            )
        root = self.base_dir.resolve()
        path = (root / location).resolve()
        if not path.is_relative_to(root):
            raise BadModelError(
                f"{self.source}: external data location {location!r} of tensor {name!r} "
                "escapes the model folder"
            )
        if not path.is_file():
            raise BadModelError(
                f"{self.source}: external data file {location!r} of tensor {name!r} is missing"
            )
        return path

    def _map(self, path: Path, name: str) -> np.ndarray:
        mm = self._maps.get(path)
        if mm is None:
            if path.stat().st_size == 0:
                mm = np.zeros(0, np.uint8)
            else:
                try:
                    mm = np.memmap(path, dtype=np.uint8, mode="r")
                except (OSError, ValueError) as exc:
                    raise BadModelError(
                        f"{self.source}: cannot map external data {str(path)!r} of tensor "
                        f"{name!r} ({exc})"
                    ) from None
                mm = np.asarray(mm)  # plain ndarray view of the mapping
            self._maps[path] = mm
        return mm


def _unpack_4bit(packed: np.ndarray, dtype: DataType, count: int) -> np.ndarray:
    """Two elements per byte, low nibble first -> one element per byte."""
    nibbles = np.empty(packed.size * 2, np.uint8)
    nibbles[0::2] = packed & 0x0F
    nibbles[1::2] = packed >> 4
    nibbles = nibbles[:count]
    if dtype == DataType.INT4:
        return ((nibbles.astype(np.int8) ^ 8) - 8).astype(dtype.numpy)
    if dtype == DataType.UINT4:
        return nibbles.astype(dtype.numpy)
    return nibbles.view(dtype.numpy)


def elem_type_name(elem_type: int) -> str:
    """ONNX's name of a TensorProto element type (the number when unknown)."""
    try:
        return onnx.TensorProto.DataType.Name(elem_type)
    except ValueError:
        return str(elem_type)


def unknown_elem_type(tp: onnx.TypeProto) -> int | None:
    """The element type of a tensor type when the IR has no DataType for it."""
    if tp.WhichOneof("value") != "tensor_type":
        return None
    elem = tp.tensor_type.elem_type
    return None if elem in DataType._value2member_map_ else int(elem)


def type_info(tp: onnx.TypeProto) -> tuple[DataType, Shape | None] | None:
    """(dtype, shape) of a tensor type; None for non-tensor types (sequences, maps)."""
    if tp.WhichOneof("value") != "tensor_type":
        return None
    tt = tp.tensor_type
    try:
        dtype = DataType(tt.elem_type)
    except ValueError:
        dtype = DataType.UNDEFINED
    if not tt.HasField("shape"):
        return dtype, None
    dims: list[int | str | None] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value") and d.dim_value >= 0:
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return dtype, tuple(dims)


def _set_shape(vi: onnx.ValueInfoProto, shape: Sequence[int | str | None]) -> None:
    tt = vi.type.tensor_type
    tt.ClearField("shape")
    tt.shape.SetInParent()
    for d in shape:
        dim = tt.shape.dim.add()
        if isinstance(d, int):
            dim.dim_value = d
        elif isinstance(d, str):
            dim.dim_param = d


def pin_input_shapes(
    inputs: Sequence[onnx.ValueInfoProto],
    input_shapes: Mapping[str, Sequence[int | str | None]],
    source: str,
) -> None:
    """Overwrite the shapes of graph inputs in place (checking names and ranks)."""
    by_name = {vi.name: vi for vi in inputs}
    for name, shape in input_shapes.items():
        vi = by_name.get(name)
        if vi is None:
            valid = ", ".join(repr(n) for n in by_name) or "none"
            raise InputShapeError(f"{source}: no model input named {name!r} (inputs: {valid})")
        info = type_info(vi.type)
        if info is None:
            raise InputShapeError(f"{source}: input {name!r} is not a tensor")
        old = info[1]
        if old is not None and len(old) != len(shape):
            raise InputShapeError(
                f"{source}: input {name!r} has rank {len(old)} ({list(old)}), "
                f"the given shape {list(shape)} has rank {len(shape)}"
            )
        for i, (a, b) in enumerate(zip(old or (), shape, strict=False)):
            if isinstance(a, int) and isinstance(b, int) and a != b:
                raise InputShapeError(
                    f"{source}: input {name!r} dim {i} is {a} in the model, given {b}"
                )
        _set_shape(vi, shape)


def infer_value_types(
    model: onnx.ModelProto,
    real_inputs: Sequence[str],
    input_shapes: Mapping[str, Sequence[int | str | None]] | None,
    source: str,
) -> onnx.GraphProto:
    """The graph to lower: a light copy of ``model.graph`` with inferred ``value_info``.

    Its nodes equal the model's; main-graph initializers are NOT all there (large and
    external ones became typed inputs), so read initializer data from the original.
    """
    light = onnx.ModelProto()
    light.ir_version = max(model.ir_version, 4)
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    g, src = light.graph, model.graph
    g.name = src.name
    g.node.extend(src.node)
    g.output.extend(src.output)
    g.value_info.extend(src.value_info)
    keep = set(real_inputs)
    g.input.extend(vi for vi in src.input if vi.name in keep)
    for init in src.initializer:
        small = len(init.raw_data) <= _SMALL_INIT_BYTES if init.HasField("raw_data") else True
        if init.data_location != onnx.TensorProto.EXTERNAL and small:
            g.initializer.append(init)
        else:
            g.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, init.dims))
    if input_shapes:
        pin_input_shapes(g.input[: len(keep)], input_shapes, source)
    try:
        inferred = onnx.shape_inference.infer_shapes(
            light, check_type=False, strict_mode=False, data_prop=True
        )
    except Exception as exc:  # noqa: BLE001 - any inference failure only costs type info
        logger.warning("%s: ONNX shape inference failed, continuing without: %s", source, exc)
        return light.graph
    return inferred.graph
