"""Load big ONNX files without holding their weights twice.

``onnx.load`` keeps every initializer's ``raw_data`` inside the protobuf
message, and turning it into NumPy copies it again: a 440 MB model costs
about 900 MB before conversion starts. Here the file is memory-mapped, the
protobuf wire format is scanned for the ``raw_data`` of large main-graph
initializers, and a copy of the model *without* those bytes is parsed. The
initializers' arrays are then NumPy views into the mapping (zero-copy, paged
in only when read).

Only the fields on the way are decoded: ModelProto.graph (7) ->
GraphProto.initializer (5) -> TensorProto.name (8) / raw_data (9). Anything
that does not scan cleanly makes :func:`split_raw_data` return None, and the
caller falls back to ``onnx.load`` (which then reports a corrupt file).
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SplitModel", "split_raw_data"]

_MODEL_GRAPH = 7
_GRAPH_INITIALIZER = 5
_TENSOR_NAME = 8
_TENSOR_RAW_DATA = 9


class _Malformed(Exception):
    pass


@dataclass
class SplitModel:
    """The model bytes without large raw_data, plus where that data lies in the file."""

    stripped: bytes
    buffer: mmap.mmap
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (offset, length)


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Malformed
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _fields(buf: memoryview, start: int, end: int):
    """Yield (field number, wire type, field start, payload start, payload end)."""
    pos = start
    while pos < end:
        fstart = pos
        key, pos = _varint(buf, pos, end)
        num, wt = key >> 3, key & 7
        if wt == 0:
            _, pos2 = _varint(buf, pos, end)
            yield num, wt, fstart, pos, pos2
            pos = pos2
        elif wt == 1:
            yield num, wt, fstart, pos, pos + 8
            pos += 8
        elif wt == 2:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise _Malformed
            yield num, wt, fstart, pos, pos + length
            pos += length
        elif wt == 5:
            yield num, wt, fstart, pos, pos + 4
            pos += 4
        else:
            raise _Malformed
        if pos > end:
            raise _Malformed


def _submessage(tag: int, payload: bytes) -> bytes:
    return _encode_varint((tag << 3) | 2) + _encode_varint(len(payload)) + payload


def _strip_tensor(
    buf: memoryview, start: int, end: int, threshold: int, spans: dict
) -> bytes | None:
    name = None
    raw = None
    for num, wt, _fs, ps, pe in _fields(buf, start, end):
        if num == _TENSOR_NAME and wt == 2:
            name = bytes(buf[ps:pe]).decode("utf-8", "replace")
        elif num == _TENSOR_RAW_DATA and wt == 2:
            raw = (ps, pe)
    if name is None or raw is None or raw[1] - raw[0] < threshold or name in spans:
        return None
    spans[name] = (raw[0], raw[1] - raw[0])
    parts = []
    for num, wt, fs, _ps, pe in _fields(buf, start, end):
        if not (num == _TENSOR_RAW_DATA and wt == 2):
            parts.append(bytes(buf[fs:pe]))
    return b"".join(parts)


def _strip_graph(buf: memoryview, start: int, end: int, threshold: int, spans: dict) -> bytes:
    parts = []
    for num, wt, fs, ps, pe in _fields(buf, start, end):
        if num == _GRAPH_INITIALIZER and wt == 2:
            tensor = _strip_tensor(buf, ps, pe, threshold, spans)
            if tensor is not None:
                parts.append(_submessage(_GRAPH_INITIALIZER, tensor))
                continue
        parts.append(bytes(buf[fs:pe]))
    return b"".join(parts)


def split_raw_data(path: Path, threshold: int = 1 << 16) -> SplitModel | None:
    """Scan ``path``; None when nothing is worth stripping or the file doesn't scan."""
    with open(path, "rb") as f:
        try:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # empty file
            return None
    buf = memoryview(mm)
    spans: dict[str, tuple[int, int]] = {}
    parts = []
    try:
        for num, wt, fs, ps, pe in _fields(buf, 0, len(buf)):
            if num == _MODEL_GRAPH and wt == 2:
                parts.append(_submessage(_MODEL_GRAPH, _strip_graph(buf, ps, pe, threshold, spans)))
            else:
                parts.append(bytes(buf[fs:pe]))
    except _Malformed:
        buf.release()
        mm.close()
        return None
    buf.release()
    if not spans:
        mm.close()
        return None
    return SplitModel(b"".join(parts), mm, spans)
