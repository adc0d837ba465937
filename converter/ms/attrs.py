"""Encoding of IR attributes as ``Custom`` op ``Attribute{name, data}`` bytes.

``data`` starts with one tag byte; the payload that follows is little-endian:

====  ========  ============================================================
tag   kind      payload
====  ========  ============================================================
0     none      (empty) -- an attribute explicitly set to None
1     int       int64
2     float     float64 (IR floats are Python floats: kept exactly)
3     string    UTF-8 bytes
4     ints      int64 * n
5     floats    float64 * n
6     strings   uint32 n, then per string: uint32 length + UTF-8 bytes
7     tensor    int32 IR DataType (ONNX numbering), uint32 ndim, int64 * ndim
                dims, then the payload as in Tensor.data (converter.ms.dtypes)
8     graph     uint32 index into MetaGraph.subGraph
9     graphs    uint32 n, uint32 * n subgraph indices
====  ========  ============================================================

Python bools are stored as ints; lists come back as lists.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from converter.ms.dtypes import decode_payload, encode_payload
from ir import DataType, Graph

__all__ = ["decode_attr", "encode_attr"]

NONE, INT, FLOAT, STRING, INTS, FLOATS, STRINGS, TENSOR, GRAPH, GRAPHS = range(10)


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, float)


def encode_attr(value: Any, graph_index: Callable[[Graph], int]) -> bytes:
    """The Attribute.data bytes of one IR attribute value."""
    if value is None:
        return bytes([NONE])
    if _is_int(value):
        return bytes([INT]) + struct.pack("<q", int(value))
    if isinstance(value, (float, np.floating)):
        return bytes([FLOAT]) + struct.pack("<d", float(value))
    if isinstance(value, str):
        return bytes([STRING]) + value.encode("utf-8")
    if isinstance(value, Graph):
        return bytes([GRAPH]) + struct.pack("<I", graph_index(value))
    if isinstance(value, np.ndarray):
        return bytes([TENSOR]) + _encode_tensor(value)
    if isinstance(value, (list, tuple)):
        return _encode_list(list(value), graph_index)
    raise TypeError(f"cannot store attribute value of type {type(value).__name__}")


def _encode_list(items: list[Any], graph_index: Callable[[Graph], int]) -> bytes:
    if all(_is_int(v) for v in items):
        return bytes([INTS]) + np.asarray(items, dtype="<i8").tobytes()
    if all(isinstance(v, (int, float, np.integer, np.floating)) for v in items):
        return bytes([FLOATS]) + np.asarray(items, dtype="<f8").tobytes()
    if all(isinstance(v, str) for v in items):
        out = [struct.pack("<I", len(items))]
        for s in items:
            raw = s.encode("utf-8")
            out.append(struct.pack("<I", len(raw)) + raw)
        return bytes([STRINGS]) + b"".join(out)
    if all(isinstance(v, Graph) for v in items):
        idx = [graph_index(g) for g in items]
        return bytes([GRAPHS]) + struct.pack(f"<I{len(idx)}I", len(idx), *idx)
    raise TypeError("cannot store a list attribute mixing element types")


def _encode_tensor(array: np.ndarray) -> bytes:
    dtype = DataType.from_numpy(array.dtype)
    head = struct.pack(f"<iI{array.ndim}q", int(dtype), array.ndim, *array.shape)
    payload = encode_payload(array)
    return head + (payload if isinstance(payload, bytes) else payload.tobytes())


def decode_attr(data: bytes, graph_at: Callable[[int], Graph]) -> Any:
    """The IR attribute value stored in Attribute.data (ValueError when malformed)."""
    if not data:
        raise ValueError("empty attribute data")
    tag, body = data[0], data[1:]
    try:
        return _DECODERS[tag](body, graph_at)
    except KeyError:
        raise ValueError(f"unknown attribute tag {tag}") from None
    except struct.error as exc:
        raise ValueError(f"truncated attribute data ({exc})") from None


def _strings(body: bytes) -> list[str]:
    (n,) = struct.unpack_from("<I", body, 0)
    pos, out = 4, []
    for _ in range(n):
        (size,) = struct.unpack_from("<I", body, pos)
        if pos + 4 + size > len(body):
            raise ValueError("truncated string list attribute")
        out.append(body[pos + 4 : pos + 4 + size].decode("utf-8"))
        pos += 4 + size
    return out


def _tensor(body: bytes) -> np.ndarray:
    dtype_num, ndim = struct.unpack_from("<iI", body, 0)
    dims = struct.unpack_from(f"<{ndim}q", body, 8)
    payload = memoryview(body)[8 + 8 * ndim :]
    return decode_payload(payload, DataType(dtype_num), tuple(dims), copy=True)


def _numbers(body: bytes, fmt: str) -> list[Any]:
    if len(body) % 8:
        raise ValueError("number list attribute has a partial element")
    return np.frombuffer(body, dtype=fmt).tolist()


def _graphs(body: bytes, graph_at: Callable[[int], Graph]) -> list[Graph]:
    (n,) = struct.unpack_from("<I", body, 0)
    return [graph_at(i) for i in struct.unpack_from(f"<{n}I", body, 4)]


_DECODERS: dict[int, Callable[[bytes, Callable[[int], Graph]], Any]] = {
    NONE: lambda b, g: None,
    INT: lambda b, g: struct.unpack("<q", b)[0],
    FLOAT: lambda b, g: struct.unpack("<d", b)[0],
    STRING: lambda b, g: b.decode("utf-8"),
    INTS: lambda b, g: _numbers(b, "<i8"),
    FLOATS: lambda b, g: _numbers(b, "<f8"),
    STRINGS: lambda b, g: _strings(b),
    TENSOR: lambda b, g: _tensor(b),
    GRAPH: lambda b, g: g(struct.unpack("<I", b)[0]),
    GRAPHS: _graphs,
}
