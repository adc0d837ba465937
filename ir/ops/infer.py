"""Reusable type/shape inference helpers for op declarations.

Each helper returns a list of (dtype, shape) per output. Shapes may contain
symbolic dims (str) and unknown dims (None); a shape of None means unknown rank.
"""

from __future__ import annotations

from collections.abc import Sequence

from ir.core import Dim, Node, Shape
from ir.dtypes import DataType
from ir.ops.base import InferFn

__all__ = [
    "Result",
    "broadcast",
    "broadcast_as",
    "broadcast_bool",
    "broadcast_shapes",
    "fixed",
    "in_dtype",
    "in_shape",
    "normalize_axis",
    "reduce_shape",
    "reduce_shape_unknown_axes",
    "same_as_input",
    "static_ints",
    "unknown",
]

Result = list[tuple[DataType, Shape | None]]


def in_dtype(node: Node, index: int = 0) -> DataType:
    v = node.input(index)
    return DataType.UNDEFINED if v is None else v.dtype


def in_shape(node: Node, index: int = 0) -> Shape | None:
    v = node.input(index)
    return None if v is None else v.shape


def normalize_axis(axis: int, rank: int) -> int:
    """Map a possibly negative axis into [0, rank); raises ValueError."""
    if not -rank <= axis < max(rank, 1):
        raise ValueError(f"axis {axis} out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def _bdim(a: Dim, b: Dim) -> Dim:
    if a == 1:
        return b
    if b == 1:
        return a
    if a is None or b is None:
        return a if b is None and a is not None and a != 1 else (b if a is None else None)
    if a == b:
        return a
    if isinstance(a, int) and isinstance(b, int):
        raise ValueError(f"shapes not broadcastable: {a} vs {b}")
    return None  # two different symbols: unknown


def broadcast_shapes(*shapes: Shape | None) -> Shape | None:
    """NumPy-style multidirectional broadcast of symbolic shapes."""
    if any(s is None for s in shapes):
        return None
    rank = max((len(s) for s in shapes), default=0)  # type: ignore[arg-type]
    out: list[Dim] = [1] * rank
    for s in shapes:
        padded = (1,) * (rank - len(s)) + tuple(s)  # type: ignore[arg-type]
        out = [_bdim(a, b) for a, b in zip(out, padded, strict=True)]
    return tuple(out)


def same_as_input(node: Node) -> Result:
    """One output with the dtype and shape of input 0."""
    return [(in_dtype(node), in_shape(node))]


def broadcast(node: Node) -> Result:
    """One output: dtype of input 0, shape the broadcast of all inputs."""
    shapes = [v.shape for v in node.inputs if v is not None]
    return [(in_dtype(node), broadcast_shapes(*shapes))]


def broadcast_as(index: int) -> InferFn:
    """Factory: broadcast shape of all inputs, dtype of input ``index`` (Where: 1)."""

    def infer(node: Node) -> Result:
        return [(in_dtype(node, index), broadcast(node)[0][1])]

    return infer


def broadcast_bool(node: Node) -> Result:
    """Comparison ops: broadcast shape, bool dtype."""
    return [(DataType.BOOL, broadcast(node)[0][1])]


def fixed(dtype: DataType) -> InferFn:
    """Factory: outputs keep input 0's shape but have ``dtype``."""

    def infer(node: Node) -> Result:
        return [(dtype, in_shape(node))]

    return infer


def unknown(node: Node) -> Result:
    """Outputs with input 0's dtype and unknown shape."""
    return [(in_dtype(node), None) for _ in node.outputs]


def static_ints(node: Node, index: int) -> list[int] | None:
    """The constant integer contents of input ``index``, or None."""
    v = node.input(index)
    if v is None or v.const is None:
        return None
    return [int(x) for x in v.const.reshape(-1)]


def reduce_shape(shape: Shape | None, axes: Sequence[int] | None, keepdims: bool) -> Shape | None:
    """Shape after reducing ``axes`` (None = all axes)."""
    if shape is None:
        return None
    rank = len(shape)
    axes_n = set(range(rank)) if axes is None else {normalize_axis(a, rank) for a in axes}
    if keepdims:
        return tuple(1 if i in axes_n else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes_n)


def reduce_shape_unknown_axes(shape: Shape | None, keepdims: bool) -> Shape | None:
    """Shape after reducing axes that are not known statically.

    With ``keepdims`` the rank survives and each dim is either kept or 1:
    dims already 1 stay 1, the others become unknown. Without it nothing is known.
    """
    if shape is None or not keepdims:
        return None
    return tuple(1 if d == 1 else None for d in shape)
