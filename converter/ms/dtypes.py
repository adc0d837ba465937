"""IR element types <-> MindSpore ``TypeId`` numbers, and tensor payload codecs.

TypeId numbers follow MindSpore's ``mindapi/base/type_id.h`` (the numbering
Netron's ``mslite.js`` decodes): kNumberTypeBool = 30, Int8..Int64 = 32..35,
UInt8..UInt64 = 37..40, Float16 = 42, Float32 = 43, Float64 = 44,
BFloat16 = 45, Complex64 = 48, Complex128 = 49, Int4 = 50, and
kObjectTypeString = 12. IR types MindSpore has no TypeId for (uint4, the
float8 and float4 types) are stored in a uint8 container (TypeId 37) and their
true type is kept in the liteconv metadata tensor (see docs/format.md).

Payloads are raw little-endian bytes in C order; int4/uint4 are packed two per
byte (element 2i in the low nibble, 2i+1 in the high nibble); strings use
MindSpore's layout: int32 count, count int32 offsets from the start of the
payload, then the UTF-8 bytes.
"""

from __future__ import annotations

import struct

import numpy as np

from ir import DataType

__all__ = [
    "CONTAINER_TYPEID",
    "decode_payload",
    "encode_payload",
    "ir_dtype",
    "is_packed",
    "typeid",
]

_TYPEID: dict[DataType, int] = {
    DataType.UNDEFINED: 0,
    DataType.STRING: 12,
    DataType.BOOL: 30,
    DataType.INT8: 32,
    DataType.INT16: 33,
    DataType.INT32: 34,
    DataType.INT64: 35,
    DataType.UINT8: 37,
    DataType.UINT16: 38,
    DataType.UINT32: 39,
    DataType.UINT64: 40,
    DataType.FLOAT16: 42,
    DataType.FLOAT: 43,
    DataType.DOUBLE: 44,
    DataType.BFLOAT16: 45,
    DataType.COMPLEX64: 48,
    DataType.COMPLEX128: 49,
    DataType.INT4: 50,
}
_FROM_TYPEID: dict[int, DataType] = {v: k for k, v in _TYPEID.items()}
# generic MindSpore ids other writers use: kNumberTypeInt, UInt, Float, Double
_FROM_TYPEID.update(
    {31: DataType.INT32, 36: DataType.UINT32, 41: DataType.FLOAT, 46: DataType.DOUBLE}
)

CONTAINER_TYPEID = 37
"""TypeId written for IR types without a MindSpore TypeId (kNumberTypeUInt8)."""

_PACKED = frozenset({DataType.INT4, DataType.UINT4})


def typeid(dtype: DataType) -> int:
    """The TypeId written for ``dtype`` (the uint8 container when MindSpore has none)."""
    return _TYPEID.get(dtype, CONTAINER_TYPEID)


def has_typeid(dtype: DataType) -> bool:
    return dtype in _TYPEID


def ir_dtype(type_id: int) -> DataType | None:
    """The IR type of a TypeId, None when liteconv does not know it."""
    return _FROM_TYPEID.get(type_id)


def is_packed(dtype: DataType) -> bool:
    return dtype in _PACKED


def encode_payload(array: np.ndarray) -> np.ndarray | bytes:
    """The bytes written for a constant: an array to view as bytes, or bytes."""
    dtype = DataType.from_numpy(array.dtype)
    if dtype == DataType.STRING:
        return _encode_strings(array)
    if dtype in _PACKED:
        nibbles = np.require(array, requirements="C").reshape(-1).view(np.uint8) & 0x0F
        if nibbles.size % 2:
            nibbles = np.append(nibbles, np.uint8(0))
        return (nibbles[0::2] | (nibbles[1::2] << 4)).astype(np.uint8)
    arr = np.require(array, requirements="C")
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return arr


def payload_nbytes(dtype: DataType, count: int) -> int | None:
    """Bytes of a payload of ``count`` elements (None for strings)."""
    if dtype == DataType.STRING:
        return None
    if dtype in _PACKED:
        return (count + 1) // 2
    return count * dtype.itemsize


def decode_payload(
    buf: memoryview, dtype: DataType, shape: tuple[int, ...], *, copy: bool
) -> np.ndarray:
    """The array stored in ``buf``; zero-copy (read-only) unless ``copy`` or unpacking."""
    count = int(np.prod(shape, dtype=np.int64))
    if dtype == DataType.STRING:
        return _decode_strings(buf, count).reshape(shape)
    want = payload_nbytes(dtype, count)
    if len(buf) != want:
        raise ValueError(f"{len(buf)} bytes of data, expected {want} for {dtype.name} {shape}")
    if dtype in _PACKED:
        packed = np.frombuffer(buf, dtype=np.uint8)
        nib = np.empty(packed.size * 2, dtype=np.uint8)
        nib[0::2] = packed & 0x0F
        nib[1::2] = packed >> 4
        nib = nib[:count]
        if dtype == DataType.INT4:
            return ((nib.astype(np.int8) ^ 8) - 8).astype(dtype.numpy).reshape(shape)
        return nib.astype(dtype.numpy).reshape(shape)
    np_dtype = dtype.numpy
    aligned = _address(buf) % np_dtype.alignment == 0
    arr = np.frombuffer(buf, dtype=np_dtype, count=count).reshape(shape)
    return arr.copy() if copy or not aligned else arr


def _address(buf: memoryview) -> int:
    if len(buf) == 0:
        return 0
    return np.frombuffer(buf, dtype=np.uint8).ctypes.data


def _encode_strings(array: np.ndarray) -> bytes:
    items = [s if isinstance(s, bytes) else str(s).encode("utf-8") for s in array.reshape(-1)]
    head = 4 + 4 * len(items)
    offsets, pos = [], head
    for s in items:
        offsets.append(pos)
        pos += len(s)
    return struct.pack(f"<i{len(items)}i", len(items), *offsets) + b"".join(items)


def _decode_strings(buf: memoryview, count: int) -> np.ndarray:
    raw = bytes(buf)
    if len(raw) < 4:
        raise ValueError("string tensor payload is shorter than its header")
    (n,) = struct.unpack_from("<i", raw, 0)
    if n != count or len(raw) < 4 + 4 * n:
        raise ValueError(f"string tensor holds {n} strings, expected {count}")
    offsets = list(struct.unpack_from(f"<{n}i", raw, 4)) + [len(raw)]
    out = np.empty(n, dtype=object)
    for i in range(n):
        lo, hi = offsets[i], offsets[i + 1]
        if not 0 <= lo <= hi <= len(raw):
            raise ValueError("string tensor offsets are out of bounds")
        out[i] = raw[lo:hi].decode("utf-8")
    return out
