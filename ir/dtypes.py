"""Element types of IR tensors.

The numeric values are those of ONNX's ``TensorProto.DataType`` enum, so the
ONNX front end maps them one to one; every other front end and the ``.ms``
writer translate through :class:`DataType`.
"""

from __future__ import annotations

import enum

import ml_dtypes
import numpy as np

__all__ = ["DataType"]


class DataType(enum.IntEnum):
    """Element type of a tensor (values follow ONNX ``TensorProto.DataType``)."""

    UNDEFINED = 0
    FLOAT = 1
    UINT8 = 2
    INT8 = 3
    UINT16 = 4
    INT16 = 5
    INT32 = 6
    INT64 = 7
    STRING = 8
    BOOL = 9
    FLOAT16 = 10
    DOUBLE = 11
    UINT32 = 12
    UINT64 = 13
    COMPLEX64 = 14
    COMPLEX128 = 15
    BFLOAT16 = 16
    FLOAT8E4M3FN = 17
    FLOAT8E4M3FNUZ = 18
    FLOAT8E5M2 = 19
    FLOAT8E5M2FNUZ = 20
    UINT4 = 21
    INT4 = 22
    FLOAT4E2M1 = 23

    @property
    def numpy(self) -> np.dtype:
        """The NumPy dtype that holds this element type."""
        try:
            return _TO_NUMPY[self]
        except KeyError:
            raise TypeError(f"data type {self.name} has no NumPy equivalent") from None

    @property
    def is_float(self) -> bool:
        return self in _FLOATS

    @property
    def is_integer(self) -> bool:
        return self in _INTEGERS

    @property
    def itemsize(self) -> int:
        """Bytes per element as stored unpacked in NumPy."""
        return self.numpy.itemsize

    @classmethod
    def from_numpy(cls, dtype: np.dtype | type) -> DataType:
        """The element type of a NumPy dtype; raises TypeError for unknown ones."""
        dt = np.dtype(dtype)
        if dt.kind in "US" or dt == np.dtype(object):
            return cls.STRING
        try:
            return _FROM_NUMPY[dt]
        except KeyError:
            raise TypeError(f"NumPy dtype {dt} has no IR data type") from None


_TO_NUMPY: dict[DataType, np.dtype] = {
    DataType.FLOAT: np.dtype(np.float32),
    DataType.UINT8: np.dtype(np.uint8),
    DataType.INT8: np.dtype(np.int8),
    DataType.UINT16: np.dtype(np.uint16),
    DataType.INT16: np.dtype(np.int16),
    DataType.INT32: np.dtype(np.int32),
    DataType.INT64: np.dtype(np.int64),
    DataType.STRING: np.dtype(object),
    DataType.BOOL: np.dtype(np.bool_),
    DataType.FLOAT16: np.dtype(np.float16),
    DataType.DOUBLE: np.dtype(np.float64),
    DataType.UINT32: np.dtype(np.uint32),
    DataType.UINT64: np.dtype(np.uint64),
    DataType.COMPLEX64: np.dtype(np.complex64),
    DataType.COMPLEX128: np.dtype(np.complex128),
    DataType.BFLOAT16: np.dtype(ml_dtypes.bfloat16),
    DataType.FLOAT8E4M3FN: np.dtype(ml_dtypes.float8_e4m3fn),
    DataType.FLOAT8E4M3FNUZ: np.dtype(ml_dtypes.float8_e4m3fnuz),
    DataType.FLOAT8E5M2: np.dtype(ml_dtypes.float8_e5m2),
    DataType.FLOAT8E5M2FNUZ: np.dtype(ml_dtypes.float8_e5m2fnuz),
    DataType.UINT4: np.dtype(ml_dtypes.uint4),
    DataType.INT4: np.dtype(ml_dtypes.int4),
    DataType.FLOAT4E2M1: np.dtype(ml_dtypes.float4_e2m1fn),
}
_FROM_NUMPY: dict[np.dtype, DataType] = {v: k for k, v in _TO_NUMPY.items()}

_FLOATS = frozenset(
    {
        DataType.FLOAT,
        DataType.FLOAT16,
        DataType.DOUBLE,
        DataType.BFLOAT16,
        DataType.FLOAT8E4M3FN,
        DataType.FLOAT8E4M3FNUZ,
        DataType.FLOAT8E5M2,
        DataType.FLOAT8E5M2FNUZ,
        DataType.FLOAT4E2M1,
    }
)
_INTEGERS = frozenset(
    {
        DataType.UINT8,
        DataType.INT8,
        DataType.UINT16,
        DataType.INT16,
        DataType.INT32,
        DataType.INT64,
        DataType.UINT32,
        DataType.UINT64,
        DataType.UINT4,
        DataType.INT4,
    }
)
