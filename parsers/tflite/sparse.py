"""Densifying TFLite sparse constants (``Tensor.sparsity``), as LiteRT's DENSIFY does.

A sparse tensor stores its non-zero values in traversal order over ``n`` original
dimensions plus one extra dimension per blocked dimension (``block_map``). Each
traversed level is DENSE (``dense_size`` entries) or SPARSE_CSR (``array_segments``
delimit, per parent position, the ``array_indices`` present). Walking the levels
gives each stored value its coordinate; a blocked dimension's coordinate is
``block_index * block_size + index_in_block``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tflite

__all__ = ["densify"]

_VECTORS = {1: tflite.Int32Vector, 2: tflite.Uint16Vector, 3: tflite.Uint8Vector}
DENSE = 0


def _index_vector(kind: int, table: Any) -> np.ndarray:
    cls = _VECTORS.get(kind)
    if cls is None or table is None:
        return np.zeros(0, np.int64)
    vec = cls()
    vec.Init(table.Bytes, table.Pos)
    return np.asarray(vec.ValuesAsNumpy(), np.int64) if vec.ValuesLength() else np.zeros(0, int)


def densify(values: np.ndarray, shape: tuple[int, ...], sparsity: Any) -> np.ndarray:
    """The dense array of ``shape`` whose non-zeros ``values`` + ``sparsity`` describe."""
    order = [int(d) for d in sparsity.TraversalOrderAsNumpy()]
    block_map = [int(d) for d in sparsity.BlockMapAsNumpy()] if sparsity.BlockMapLength() \
        else []  # fmt: skip
    levels = []
    for k in range(sparsity.DimMetadataLength()):
        m = sparsity.DimMetadata(k)
        if m.Format() == DENSE:
            levels.append((True, int(m.DenseSize()), None, None))
        else:
            seg = _index_vector(m.ArraySegmentsType(), m.ArraySegments())
            idx = _index_vector(m.ArrayIndicesType(), m.ArrayIndices())
            levels.append((False, 0, seg, idx))
    n = len(shape)
    block_size = {}
    for j, d in enumerate(block_map):
        block_size[d] = levels[order.index(n + j)][1]
    out = np.zeros(shape, values.dtype)
    coords = [0] * len(order)

    def visit(level: int, prev: int) -> None:
        if level == len(order):
            pos = [0] * n
            for lvl, dim in enumerate(order):
                if dim < n:
                    pos[dim] += coords[lvl] * block_size.get(dim, 1)
                else:
                    pos[block_map[dim - n]] += coords[lvl]
            out[tuple(pos)] = values[prev]
            return
        dense, size, seg, idx = levels[level]
        if dense:
            for i in range(size):
                coords[level] = i
                visit(level + 1, prev * size + i)
        else:
            assert seg is not None and idx is not None
            for i in range(int(seg[prev]), int(seg[prev + 1])):
                coords[level] = int(idx[i])
                visit(level + 1, i)

    visit(0, 0)
    return out
