"""Reductions: Reduce*, ArgMax/ArgMin, CumSum.

Semantics: the ONNX operator spec, latest opset (Reduce* in their opset-18+
form, where ``axes`` is an optional int64 INPUT):

- ``keepdims=1`` keeps reduced axes as size 1; ``keepdims=0`` drops them.
- ``axes`` absent or empty reduces every axis, unless ``noop_with_empty_axes=1``,
  in which case nothing is reduced but composite reductions still apply their
  elementwise steps (ReduceSumSquare squares, ReduceLogSum takes the log, ...).
- Reductions over an empty set yield the identity of the reduction: 0 (Sum,
  L1, L2, SumSquare), 1 (Prod), -inf or the dtype minimum (Max, LogSum,
  LogSumExp), +inf or the dtype maximum (Min), NaN (Mean on floats).
- ArgMax/ArgMin reduce one ``axis`` to int64 indices; ``select_last_index``
  picks the last of equal extremes.
- CumSum(x, axis) is the running sum along the scalar ``axis`` input;
  ``exclusive`` leaves out the current element, ``reverse`` sums from the end.
"""

from __future__ import annotations

from ir.core import Node
from ir.dtypes import DataType
from ir.ops.base import INT, OpDef, Trait, op
from ir.ops.infer import (
    Result,
    in_dtype,
    in_shape,
    reduce_shape,
    reduce_shape_unknown_axes,
    same_as_input,
    static_ints,
)

_REDUCE_NAMES = (
    "ReduceSum ReduceMean ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2 "
    "ReduceLogSum ReduceLogSumExp ReduceSumSquare"
).split()


def infer_reduce(node: Node) -> Result:
    """Reduce* with an optional ``axes`` input: shape known when axes are constant."""
    shape = in_shape(node)
    keepdims = bool(node.attr("keepdims"))
    axes_value = node.input(1)
    if axes_value is not None and axes_value.const is None:
        return [(in_dtype(node), reduce_shape_unknown_axes(shape, keepdims))]
    axes = static_ints(node, 1) if axes_value is not None else []
    if not axes:
        if node.attr("noop_with_empty_axes"):
            return [(in_dtype(node), shape)]
        return [(in_dtype(node), reduce_shape(shape, None, keepdims))]
    return [(in_dtype(node), reduce_shape(shape, axes, keepdims))]


def infer_arg(node: Node) -> Result:
    """ArgMax/ArgMin: one axis reduced, int64 indices."""
    shape = reduce_shape(in_shape(node), [node.attr("axis")], bool(node.attr("keepdims")))
    return [(DataType.INT64, shape)]


def _reduce(name: str) -> OpDef:
    return op(
        name,
        "data axes?",
        "reduced",
        attrs={"keepdims": INT(1), "noop_with_empty_axes": INT(0)},
        traits={Trait.REDUCTION},
        infer=infer_reduce,
    )


def _arg(name: str) -> OpDef:
    return op(
        name,
        "data",
        "reduced",
        attrs={"axis": INT(0), "keepdims": INT(1), "select_last_index": INT(0)},
        infer=infer_arg,
    )


OPS: tuple[OpDef, ...] = (
    *(_reduce(name) for name in _REDUCE_NAMES),
    _arg("ArgMax"),
    _arg("ArgMin"),
    op(
        "CumSum",
        "x axis",
        "y",
        attrs={"exclusive": INT(0), "reverse": INT(0)},
        infer=same_as_input,
    ),
)
