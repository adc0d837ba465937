"""Reading a ``.tflite`` flatbuffer: subgraphs, tensors, buffers, quantization, operators.

The file is read with the ``tflite`` package's generated accessors. Everything a
lowering needs is copied into small dataclasses (:class:`Tensor`, :class:`Operator`):
the flatbuffer tables are not used after loading. Buffers become NumPy arrays viewing
the file bytes (copied only when a lowering transforms them). A file that is not a
TFLite flatbuffer, or whose tables point outside the file, raises
:class:`~parsers.errors.BadModelError`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tflite
from tflite.utils import BUILTIN_OPCODE2NAME

from ir import DataType
from parsers.errors import BadModelError

__all__ = ["Model", "Operator", "Quant", "Subgraph", "Tensor", "load_model"]

_TYPES: dict[int, DataType] = {
    0: DataType.FLOAT, 1: DataType.FLOAT16, 2: DataType.INT32, 3: DataType.UINT8,
    4: DataType.INT64, 5: DataType.STRING, 6: DataType.BOOL, 7: DataType.INT16,
    9: DataType.INT8, 10: DataType.DOUBLE, 12: DataType.UINT64, 15: DataType.UINT32,
    16: DataType.UINT16, 18: DataType.BFLOAT16,
}  # fmt: skip
_TYPE_NAMES = {v: k for k, v in vars(tflite.TensorType).items() if not k.startswith("_")}
_OPTION_CLASSES = {v: k for k, v in vars(tflite.BuiltinOptions).items() if not k.startswith("_")}


@dataclass
class Quant:
    """Affine quantization of one tensor: real = scale * (q - zero_point)."""

    scale: np.ndarray  # float32, 1 entry (per tensor) or one per channel
    zero_point: np.ndarray  # int64, same length as scale
    axis: int | None  # quantized dimension when per channel

    def same_as(self, other: Quant | None) -> bool:
        return (
            other is not None
            and self.axis == other.axis
            and np.array_equal(self.scale, other.scale)
            and np.array_equal(self.zero_point, other.zero_point)
        )


@dataclass
class Tensor:
    index: int
    name: str
    dtype: DataType
    type_name: str
    shape: tuple[int, ...]
    signature: tuple[int, ...]  # -1 for dynamic dims
    data: np.ndarray | None
    quant: Quant | None
    is_variable: bool
    sparse: Any = None  # tflite.SparsityParameters when the tensor is sparse


@dataclass
class Operator:
    index: int
    code: str  # builtin name (CONV_2D) or "CUSTOM"
    custom_code: str
    version: int
    inputs: list[int]  # -1 for omitted optionals
    outputs: list[int]
    options: Any  # the tflite.<X>Options table, or None


@dataclass
class Subgraph:
    """One TFLite subgraph: its own tensor table, operators, inputs and outputs."""

    index: int
    name: str
    tensors: list[Tensor]
    operators: list[Operator]
    inputs: list[int]
    outputs: list[int]


@dataclass
class Model:
    """The model: ``graphs[0]`` is the main subgraph, the others are bodies of control-flow
    operators (WHILE, IF, CALL_ONCE), referred to by index."""

    source: str
    version: int
    description: str
    graphs: list[Subgraph]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def main(self) -> Subgraph:
        return self.graphs[0]

    @property
    def tensors(self) -> list[Tensor]:
        return self.graphs[0].tensors

    @property
    def operators(self) -> list[Operator]:
        return self.graphs[0].operators

    @property
    def inputs(self) -> list[int]:
        return self.graphs[0].inputs

    @property
    def outputs(self) -> list[int]:
        return self.graphs[0].outputs

    @property
    def subgraphs(self) -> int:
        return len(self.graphs)


def load_model(path: str | os.PathLike) -> Model:
    """Read ``path``; raises BadModelError when it is not a readable TFLite model."""
    p = Path(path)
    try:
        buf = p.read_bytes()
    except OSError as exc:
        raise BadModelError(f"cannot read {p}: {exc.strerror or exc}") from None
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise BadModelError(f"{p} is not a TensorFlow Lite model (no TFL3 file identifier)")
    try:
        return _read(buf, str(p))
    except BadModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - flatbuffers raise assorted errors on garbage
        raise BadModelError(
            f"{p} is a truncated or corrupt TensorFlow Lite model ({type(exc).__name__})"
        ) from None


def _read(buf: bytes, source: str) -> Model:
    model = tflite.Model.GetRootAsModel(buf, 0)
    if model.SubgraphsLength() < 1:
        raise BadModelError(f"{source}: the model has no subgraph")
    codes = [_opcode(model.OperatorCodes(i)) for i in range(model.OperatorCodesLength())]
    buffers = _Buffers(model, buf, source)
    graphs = [
        _subgraph(model.Subgraphs(k), k, codes, buffers, source)
        for k in range(model.SubgraphsLength())
    ]
    desc = model.Description()
    return Model(
        source=source,
        version=int(model.Version()),
        description=desc.decode("utf-8", "replace") if desc else "",
        graphs=graphs,
    )


def _subgraph(
    sg: Any, k: int, codes: list[tuple[str, str, int]], buffers: _Buffers, source: str
) -> Subgraph:
    tensors = [_tensor(sg.Tensors(i), i, buffers) for i in range(sg.TensorsLength())]
    where = f"{source}: subgraph {k}" if k else source
    ops = []
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        c = op.OpcodeIndex()
        if not 0 <= c < len(codes):
            raise BadModelError(f"{where}: operator {i} has opcode index {c} out of range")
        code, custom, version = codes[c]
        ins = [int(t) for t in op.InputsAsNumpy()] if op.InputsLength() else []
        outs = [int(t) for t in op.OutputsAsNumpy()] if op.OutputsLength() else []
        for t in (*ins, *outs):
            if t >= len(tensors) or t < -1:
                raise BadModelError(f"{where}: operator {i} reads tensor {t} out of range")
        ops.append(Operator(i, code, custom, version, ins, outs, _options(op)))
    ins = [int(t) for t in sg.InputsAsNumpy()] if sg.InputsLength() else []
    outs = [int(t) for t in sg.OutputsAsNumpy()] if sg.OutputsLength() else []
    for t in (*ins, *outs):
        if not 0 <= t < len(tensors):
            raise BadModelError(f"{where}: subgraph input/output {t} is out of range")
    name = sg.Name()
    return Subgraph(k, name.decode("utf-8", "replace") if name else f"subgraph_{k}",
                    tensors, ops, ins, outs)  # fmt: skip


def _opcode(oc: Any) -> tuple[str, str, int]:
    code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
    name = BUILTIN_OPCODE2NAME.get(code, f"BUILTIN_{code}")
    custom = oc.CustomCode()
    return name, custom.decode("utf-8", "replace") if custom else "", int(oc.Version())


def _options(op: Any) -> Any:
    kind = op.BuiltinOptionsType()
    table = op.BuiltinOptions()
    if not kind or table is None:
        return None
    cls = getattr(tflite, _OPTION_CLASSES.get(kind, ""), None)
    if cls is None:
        return None
    opts = cls()
    opts.Init(table.Bytes, table.Pos)
    return opts


class _Buffers:
    def __init__(self, model: Any, buf: bytes, source: str) -> None:
        self.model = model
        self.buf = buf
        self.source = source

    def raw(self, index: int) -> np.ndarray | None:
        if index <= 0 or index >= self.model.BuffersLength():
            return None
        b = self.model.Buffers(index)
        offset, size = int(b.Offset()), int(b.Size())
        if offset > 1:  # data stored after the flatbuffer (models over 2 GB)
            if offset + size > len(self.buf):
                raise BadModelError(f"{self.source}: buffer {index} lies past the end of file")
            return np.frombuffer(self.buf, np.uint8, size, offset)
        if b.DataLength() == 0:
            return None
        return b.DataAsNumpy()


def _tensor(t: Any, index: int, buffers: _Buffers) -> Tensor:
    name = t.Name().decode("utf-8", "replace") if t.Name() else f"tensor_{index}"
    kind = int(t.Type())
    dtype = _TYPES.get(kind, DataType.UNDEFINED)
    shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
    sig = tuple(int(d) for d in t.ShapeSignatureAsNumpy()) if t.ShapeSignatureLength() else shape
    raw = buffers.raw(int(t.Buffer()))
    data = None
    if raw is not None and dtype not in (DataType.UNDEFINED, DataType.STRING):
        np_dtype = np.dtype(dtype.numpy).newbyteorder("<")
        if raw.nbytes % np_dtype.itemsize:
            raise BadModelError(f"{buffers.source}: tensor {name!r} has a truncated buffer")
        data = raw.view(np_dtype)
        if t.Sparsity() is None:
            if data.size != int(np.prod(shape, dtype=np.int64)):
                raise BadModelError(
                    f"{buffers.source}: tensor {name!r} holds {data.size} values for shape "
                    f"{list(shape)}"
                )
            data = data.reshape(shape)
    return Tensor(
        index=index,
        name=name,
        dtype=dtype,
        type_name=_TYPE_NAMES.get(kind, str(kind)),
        shape=shape,
        signature=sig if len(sig) == len(shape) else shape,
        data=data,
        quant=_quant(t.Quantization()),
        is_variable=bool(t.IsVariable()),
        sparse=t.Sparsity(),
    )


def _quant(q: Any) -> Quant | None:
    if q is None or q.ScaleLength() == 0:
        return None
    scale = np.asarray(q.ScaleAsNumpy(), np.float32).copy()
    if q.ZeroPointLength():
        zp = np.asarray(q.ZeroPointAsNumpy(), np.int64).copy()
    else:
        zp = np.zeros(scale.shape, np.int64)
    if zp.size == 1 and scale.size > 1:
        zp = np.repeat(zp, scale.size)
    axis = int(q.QuantizedDimension()) if scale.size > 1 else None
    return Quant(scale, zp, axis)
