"""Schema-driven FlatBuffers encoding and decoding of MindSpore Lite tables.

Both directions are driven by :mod:`converter.ms.schema_data` (field slots,
types and defaults of the published MSL2 schema), so no generated classes are
needed. Values are plain Python: a table is a ``dict`` (field -> value), a
union is ``(member_table_name, dict)``, scalar vectors are sequences or NumPy
arrays. Two wrapper types carry what plain values cannot:

* :class:`Blob` -- a ``[ubyte]`` vector written from a buffer with a chosen
  alignment (tensor data, 64-byte aligned so readers can map it zero-copy);
* :class:`Span` -- what the decoder returns for ``[ubyte]`` vectors: the
  absolute offset and length in the file, so callers decide whether to copy.

The decoder checks every offset against the buffer and raises
:class:`MsFormatError` on anything out of bounds.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import flatbuffers
import numpy as np

from converter.ms.schema_data import PRIMITIVE_UNION, TABLES

__all__ = ["Blob", "Decoder", "MsFormatError", "Span", "build_table", "field_specs"]

FILE_IDENTIFIER = b"MSL2"


class MsFormatError(Exception):
    """The file is not a valid MindSpore Lite (MSL2) model or is corrupt."""


@dataclass(frozen=True)
class Blob:
    """A ``[ubyte]`` vector to write from ``data`` with its start aligned to ``align``."""

    data: Any  # bytes-like (bytes, memoryview, contiguous ndarray)
    align: int = 64


@dataclass(frozen=True)
class Span:
    """Location of a decoded ``[ubyte]`` vector: absolute offset and byte length."""

    offset: int
    length: int


@dataclass(frozen=True)
class FieldSpec:
    name: str
    slot: int
    type: str
    default: Any
    enum: str | None


_SPECS: dict[str, dict[str, FieldSpec]] = {
    table: {f[0]: FieldSpec(*f) for f in fields} for table, fields in TABLES.items()
}
_UNION_INDEX = {name: i for i, name in enumerate(PRIMITIVE_UNION)}

_NP = {
    "int8": np.dtype("<i1"),
    "bool": np.dtype("<u1"),
    "int32": np.dtype("<i4"),
    "uint32": np.dtype("<u4"),
    "int64": np.dtype("<i8"),
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
    "uint8": np.dtype("<u1"),
}
_PREPEND = {
    "bool": "PrependBoolSlot",
    "int8": "PrependInt8Slot",
    "int32": "PrependInt32Slot",
    "uint32": "PrependUint32Slot",
    "int64": "PrependInt64Slot",
    "float32": "PrependFloat32Slot",
    "float64": "PrependFloat64Slot",
}
_STRUCT = {
    "bool": "<?",
    "int8": "<b",
    "int32": "<i",
    "uint32": "<I",
    "int64": "<q",
    "float32": "<f",
    "float64": "<d",
}


def field_specs(table: str) -> dict[str, FieldSpec]:
    """Field name -> spec of a schema table (KeyError for unknown tables)."""
    return _SPECS[table]


def _num_slots(table: str) -> int:
    slots = [f.slot + (2 if f.type.startswith("union:") else 1) for f in _SPECS[table].values()]
    return max(slots, default=0)


# -- encoding ------------------------------------------------------------------
DEFER_BYTES = 1 << 16
"""Blobs at least this big are not copied into the builder when it has a ``deferred``
list: their bytes are left unwritten and streamed from the source at output time."""


def _raw_vector(b: flatbuffers.Builder, data: Any, itemsize: int, count: int, align: int) -> int:
    view = memoryview(data).cast("B")
    b.StartVector(itemsize, count, max(align, itemsize))
    b.head -= view.nbytes
    deferred = getattr(b, "deferred", None)
    if deferred is not None and view.nbytes >= DEFER_BYTES:
        deferred.append((len(b.Bytes) - b.head, view))  # from the end: survives growth
    else:
        b.Bytes[b.head : b.head + view.nbytes] = view
    return b.EndVector()


def _offsets_vector(b: flatbuffers.Builder, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


SHARE_BYTES = 256
"""Strings and scalar vectors up to this size are written once per buffer and shared by
every field that holds the same bytes (a builder with a ``shared`` dict): a model's kernel
sizes, strides, dims and repeated names would otherwise be stored once per node or tensor,
a tenth of a small model's file. FlatBuffers readers follow offsets wherever they point."""


def _shared(b: flatbuffers.Builder, key: tuple[Any, ...], build: Any) -> int:
    """The offset of an identical object already in ``b`` (its ``shared`` dict), else build it."""
    cache = getattr(b, "shared", None)
    if cache is None:
        return build()
    off = cache.get(key)
    if off is None:
        off = cache[key] = build()
    return off


def _encode_ref(b: flatbuffers.Builder, spec: FieldSpec, value: Any) -> int:
    """Build the out-of-line object of a non-scalar field; returns its offset."""
    kind = spec.type
    if kind == "string":
        if len(value) > SHARE_BYTES:
            return b.CreateString(value)
        return _shared(b, ("s", value), lambda: b.CreateString(value))
    if kind.startswith("[table:"):
        sub = kind[7:-1]
        return _offsets_vector(b, [build_table(b, sub, v) for v in value])
    if kind.startswith("table:"):
        return build_table(b, kind[6:], value)
    if kind.startswith("union:"):
        member, fields = value
        return build_table(b, member, fields)
    if kind == "[uint8]" and isinstance(value, Blob):
        nbytes = memoryview(value.data).nbytes
        return _raw_vector(b, value.data, 1, nbytes, value.align)
    dtype = _NP[kind[1:-1]]
    arr = np.require(np.asarray(value, dtype=dtype), requirements="C")
    if arr.nbytes > SHARE_BYTES:
        return _raw_vector(b, arr, dtype.itemsize, arr.size, dtype.itemsize)
    key = ("v", dtype.itemsize, arr.tobytes())
    return _shared(b, key, lambda: _raw_vector(b, arr, dtype.itemsize, arr.size, dtype.itemsize))


def build_table(b: flatbuffers.Builder, table: str, values: Mapping[str, Any]) -> int:
    """Write table ``table`` with ``values`` (None values are left out); returns its offset."""
    specs = _SPECS[table]
    refs: dict[str, int] = {}
    for name, value in values.items():
        if name not in specs:
            raise KeyError(f"table {table} has no field {name!r}")
        spec = specs[name]
        if value is not None and spec.type not in _PREPEND:
            refs[name] = _encode_ref(b, spec, value)
    b.StartObject(_num_slots(table))
    for name, value in values.items():
        spec = specs[name]
        if value is None:
            continue
        if spec.type in _PREPEND:
            cast = bool if spec.type == "bool" else float if "float" in spec.type else int
            getattr(b, _PREPEND[spec.type])(spec.slot, cast(value), spec.default)
        elif spec.type.startswith("union:"):
            b.PrependUint8Slot(spec.slot, _UNION_INDEX[value[0]], 0)
            b.PrependUOffsetTRelativeSlot(spec.slot + 1, refs[name], 0)
        else:
            b.PrependUOffsetTRelativeSlot(spec.slot, refs[name], 0)
    return b.EndObject()


# -- decoding ------------------------------------------------------------------
class Decoder:
    """Bounds-checked reader of MSL2 tables over any buffer (bytes, mmap)."""

    def __init__(self, buf: Any) -> None:
        self.buf = memoryview(buf).cast("B") if not isinstance(buf, memoryview) else buf
        self.size = self.buf.nbytes

    def _check(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise MsFormatError(
                f"the file is truncated or corrupt: {length} bytes at offset {offset} lie "
                f"outside its {self.size} bytes"
            )

    def _unpack(self, fmt: str, offset: int) -> Any:
        self._check(offset, struct.calcsize(fmt))
        return struct.unpack_from(fmt, self.buf, offset)[0]

    def root(self) -> int:
        if self.size < 8:
            raise MsFormatError(f"the file is too small ({self.size} bytes) to be a .ms model")
        ident = bytes(self.buf[4:8])
        if ident != FILE_IDENTIFIER:
            raise MsFormatError(
                f"not a MindSpore Lite MSL2 model: file identifier is {ident!r}, expected b'MSL2'"
            )
        return self._unpack("<I", 0)

    def _field_pos(self, pos: int, slot: int) -> int:
        vtable = pos - self._unpack("<i", pos)
        vt_size = self._unpack("<H", vtable)
        entry = 4 + 2 * slot
        if entry + 2 > vt_size:
            return 0
        voff = self._unpack("<H", vtable + entry)
        return pos + voff if voff else 0

    def _indirect(self, at: int) -> int:
        return at + self._unpack("<I", at)

    def _vector(self, at: int, itemsize: int) -> tuple[int, int]:
        start = self._indirect(at)
        count = self._unpack("<I", start)
        self._check(start + 4, count * itemsize)
        return start + 4, count

    def table(self, pos: int, table: str) -> dict[str, Any]:
        """Every field of ``table`` at ``pos``; absent fields give their default (or None)."""
        out: dict[str, Any] = {}
        for spec in _SPECS[table].values():
            at = self._field_pos(pos, spec.slot)
            out[spec.name] = self._value(pos, at, spec)
        return out

    def _value(self, pos: int, at: int, spec: FieldSpec) -> Any:
        kind = spec.type
        if kind.startswith("union:"):
            type_at = at
            value_at = self._field_pos(pos, spec.slot + 1)
            index = self._unpack("<B", type_at) if type_at else 0
            if not index or not value_at:
                return None
            if index >= len(PRIMITIVE_UNION):
                raise MsFormatError(f"the file is corrupt: primitive type {index} is unknown")
            member = PRIMITIVE_UNION[index]
            return member, self.table(self._indirect(value_at), member)
        if not at:
            return spec.default
        if kind in _STRUCT:
            return self._unpack(_STRUCT[kind], at)
        if kind == "string":
            start, count = self._vector(at, 1)
            try:
                return bytes(self.buf[start : start + count]).decode("utf-8")
            except UnicodeDecodeError:
                raise MsFormatError(f"the file is corrupt: bad UTF-8 at offset {start}") from None
        if kind.startswith("[table:"):
            start, count = self._vector(at, 4)
            return [self.table(self._indirect(start + 4 * i), kind[7:-1]) for i in range(count)]
        if kind.startswith("table:"):
            return self.table(self._indirect(at), kind[6:])
        if kind == "[uint8]":
            start, count = self._vector(at, 1)
            return Span(start, count)
        dtype = _NP[kind[1:-1]]
        start, count = self._vector(at, dtype.itemsize)
        return np.frombuffer(self.buf, dtype=dtype, count=count, offset=start).tolist()

    def bytes_of(self, span: Span) -> memoryview:
        self._check(span.offset, span.length)
        return self.buf[span.offset : span.offset + span.length]
