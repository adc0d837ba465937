"""Lowerings of TF math ops: elementwise, comparisons, reductions, matmuls, casts.

TF and ONNX broadcast binary ops alike (numpy rules), so most are renames. TF-only forms
are spelled with IR ops: ``Rsqrt = 1/sqrt``, ``Square = x*x``, ``SquaredDifference =
(x-y)^2``, ``Erfc = 1-erf``, ``Relu6 = clip(x, 0, 6)``, ``FloorDiv``/``FloorMod`` with
the floor (Python) convention, ``BatchMatMul`` adjoints as transposes of the two last
axes, reductions with their axis input cast to int64.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ir import DataType, Value
from parsers.tf.context import Lowering, OpContext

__all__ = ["LOWERINGS"]

_BINARY = {
    "Add": "Add", "AddV2": "Add", "Sub": "Sub", "Mul": "Mul", "RealDiv": "Div",
    "Maximum": "Max", "Minimum": "Min", "Pow": "Pow", "Less": "Less", "LessEqual":
    "LessOrEqual", "Greater": "Greater", "GreaterEqual": "GreaterOrEqual", "Equal": "Equal",
    "LogicalAnd": "And", "LogicalOr": "Or", "BitwiseAnd": "BitwiseAnd",
    "BitwiseOr": "BitwiseOr", "BitwiseXor": "BitwiseXor",
}  # fmt: skip

_UNARY = {
    "Relu": "Relu", "Sigmoid": "Sigmoid", "Tanh": "Tanh", "Exp": "Exp", "Log": "Log",
    "Neg": "Neg", "Abs": "Abs", "Sqrt": "Sqrt", "Erf": "Erf", "Floor": "Floor",
    "Ceil": "Ceil", "Round": "Round", "Sin": "Sin", "Cos": "Cos", "Tan": "Tan",
    "Asin": "Asin", "Acos": "Acos", "Atan": "Atan", "Sinh": "Sinh", "Cosh": "Cosh",
    "Asinh": "Asinh", "Acosh": "Acosh", "Atanh": "Atanh", "Sign": "Sign",
    "Softplus": "Softplus", "Softsign": "Softsign", "IsNan": "IsNaN", "Reciprocal":
    "Reciprocal", "Inv": "Reciprocal", "LogicalNot": "Not", "Selu": "Selu", "Elu": "Elu",
    "Invert": "BitwiseNot",
}  # fmt: skip

_REDUCE = {
    "Mean": "ReduceMean", "Sum": "ReduceSum", "Max": "ReduceMax", "Min": "ReduceMin",
    "Prod": "ReduceProd", "EuclideanNorm": "ReduceL2",
}  # fmt: skip


def _binary(ir_op: str) -> Lowering:
    def lower(ctx: OpContext) -> Value:
        return ctx.op_(ir_op, [ctx.x(0), ctx.x(1)])

    return lower


def _unary(ir_op: str) -> Lowering:
    def lower(ctx: OpContext) -> Value:
        return ctx.op_(ir_op, [ctx.x(0)])

    return lower


def _div(ctx: OpContext) -> Value:
    return ctx.op_("Div", [ctx.x(0), ctx.x(1)])


def _floor_div(ctx: OpContext) -> Value:
    x, y = ctx.x(0), ctx.x(1)
    if x.dtype.is_float:
        return ctx.op_("Floor", [ctx.op_("Div", [x, y])])
    rem = ctx.op_("Mod", [x, y])  # Python-style remainder (sign of y)
    return ctx.op_("Div", [ctx.op_("Sub", [x, rem]), y])


def _floor_mod(ctx: OpContext) -> Value:
    x, y = ctx.x(0), ctx.x(1)
    if not x.dtype.is_float:
        return ctx.op_("Mod", [x, y])
    q = ctx.op_("Floor", [ctx.op_("Div", [x, y])])
    return ctx.op_("Sub", [x, ctx.op_("Mul", [q, y])])


def _div_no_nan(ctx: OpContext) -> Value:
    x, y = ctx.x(0), ctx.x(1)
    zero = ctx.scalar_like(0.0, y)
    safe = ctx.op_("Where", [ctx.op_("Equal", [y, zero]), ctx.scalar_like(1.0, y), y])
    return ctx.op_("Where", [ctx.op_("Equal", [y, zero]), zero, ctx.op_("Div", [x, safe])])


def _not_equal(ctx: OpContext) -> Value:
    return ctx.op_("Not", [ctx.op_("Equal", [ctx.x(0), ctx.x(1)])])


def _squared_difference(ctx: OpContext) -> Value:
    d = ctx.op_("Sub", [ctx.x(0), ctx.x(1)])
    return ctx.op_("Mul", [d, d])


def _square(ctx: OpContext) -> Value:
    return ctx.op_("Mul", [ctx.x(0), ctx.x(0)])


def _rsqrt(ctx: OpContext) -> Value:
    return ctx.op_("Reciprocal", [ctx.op_("Sqrt", [ctx.x(0)])])


def _erfc(ctx: OpContext) -> Value:
    x = ctx.x(0)
    return ctx.op_("Sub", [ctx.scalar_like(1.0, x), ctx.op_("Erf", [x])])


def _log1p(ctx: OpContext) -> Value:
    x = ctx.x(0)
    return ctx.op_("Log", [ctx.op_("Add", [x, ctx.scalar_like(1.0, x)])])


def _expm1(ctx: OpContext) -> Value:
    x = ctx.x(0)
    return ctx.op_("Sub", [ctx.op_("Exp", [x]), ctx.scalar_like(1.0, x)])


def _relu6(ctx: OpContext) -> Value:
    x = ctx.x(0)
    return ctx.op_("Clip", [x, ctx.scalar_like(0.0, x), ctx.scalar_like(6.0, x)])


def _leaky_relu(ctx: OpContext) -> Value:
    return ctx.op_("LeakyRelu", [ctx.x(0)], alpha=float(ctx.attr("alpha", 0.2)))


def _clip_by_value(ctx: OpContext) -> Value:
    x, lo, hi = ctx.x(0), ctx.x(1), ctx.x(2)
    if lo.shape == () and hi.shape == ():
        return ctx.op_("Clip", [x, lo, hi])
    return ctx.op_("Min", [ctx.op_("Max", [x, lo]), hi])


def _softmax(ir_op: str) -> Lowering:
    def lower(ctx: OpContext) -> Value:
        return ctx.op_(ir_op, [ctx.x(0)], axis=-1)

    return lower


def _add_n(ctx: OpContext) -> Value:
    values = [ctx.x(i) for i in range(len(ctx.inputs))]
    return values[0] if len(values) == 1 else ctx.op_("Sum", values)


def _cast(ctx: OpContext) -> Value:
    to = ctx.attr("DstT")
    x = ctx.x(0)
    if to == DataType.UNDEFINED:
        ctx.fail("cast to a type the IR does not have")
    if x.dtype == to:
        return x
    return ctx.op_("Cast", [x], to=int(to))


def _axes(ctx: OpContext, i: int) -> Value:
    v = ctx.x(i)
    if v.const is not None:
        return ctx.i64(np.atleast_1d(v.const).astype(np.int64))
    return ctx.op_("Reshape", [ctx.as_i64(v), ctx.i64([-1])])


def _reduce(ir_op: str) -> Lowering:
    def lower(ctx: OpContext) -> Value:
        keep = int(bool(ctx.attr("keep_dims", False)))
        axes = ctx.const_of(1)
        if axes is not None and axes.size == 0:
            return ctx.x(0)  # TF reduces over no axis: identity
        return ctx.op_(ir_op, [ctx.x(0), _axes(ctx, 1)], keepdims=keep)

    return lower


def _bool_reduce(ir_op: str) -> Lowering:
    def lower(ctx: OpContext) -> Value:
        keep = int(bool(ctx.attr("keep_dims", False)))
        as_int = ctx.op_("Cast", [ctx.x(0)], to=int(DataType.INT32))
        red = ctx.op_(ir_op, [as_int, _axes(ctx, 1)], keepdims=keep)
        return ctx.op_("Cast", [red], to=int(DataType.BOOL))

    return lower


def _arg(ir_op: str) -> Lowering:
    def lower(ctx: OpContext) -> Value:
        axis = int(np.asarray(ctx.need_const(1, "the dimension")).reshape(-1)[0])
        out = ctx.op_(ir_op, [ctx.x(0)], axis=axis, keepdims=0)
        want = ctx.attr("output_type", DataType.INT64)
        return out if want == DataType.INT64 else ctx.op_("Cast", [out], to=int(want))

    return lower


def transpose(ctx: OpContext, v: Value, perm: list[int]) -> Value:
    """``v`` transposed by ``perm``, folded at parse time when ``v`` is constant."""
    if v.const is not None:
        return ctx.const(np.ascontiguousarray(np.transpose(v.const, perm)))
    return ctx.op_("Transpose", [v], perm=perm)


def _swap_last(ctx: OpContext, i: int) -> Value:
    r = ctx.need_rank(i)
    perm = list(range(r))
    perm[-2], perm[-1] = perm[-1], perm[-2]
    return transpose(ctx, ctx.x(i), perm)


def _matmul(ctx: OpContext) -> Value:
    a = _swap_last(ctx, 0) if ctx.attr("transpose_a", False) else ctx.x(0)
    b = _swap_last(ctx, 1) if ctx.attr("transpose_b", False) else ctx.x(1)
    return ctx.op_("MatMul", [a, b])


def _batch_matmul(ctx: OpContext) -> Value:
    a = _swap_last(ctx, 0) if ctx.attr("adj_x", False) else ctx.x(0)
    b = _swap_last(ctx, 1) if ctx.attr("adj_y", False) else ctx.x(1)
    out = ctx.op_("MatMul", [a, b])
    want = ctx.attr("Tout", None)
    if want is not None and want != out.dtype and out.dtype != DataType.UNDEFINED:
        out = ctx.op_("Cast", [out], to=int(want))
    return out


def _einsum(ctx: OpContext) -> Value:
    values = [ctx.x(i) for i in range(len(ctx.inputs))]
    return ctx.op_("Einsum", values, equation=str(ctx.attr("equation")).replace(" ", ""))


def _cumsum(ctx: OpContext) -> Value:
    return ctx.op_(
        "CumSum",
        [ctx.x(0), ctx.as_i64(ctx.x(1))],
        exclusive=int(bool(ctx.attr("exclusive", False))),
        reverse=int(bool(ctx.attr("reverse", False))),
    )


def _table() -> dict[str, Callable[[OpContext], object]]:
    table: dict[str, Callable[[OpContext], object]] = {}
    table.update({k: _binary(v) for k, v in _BINARY.items()})
    table.update({k: _unary(v) for k, v in _UNARY.items()})
    table.update({k: _reduce(v) for k, v in _REDUCE.items()})
    table.update({
        "Div": _div, "FloorDiv": _floor_div, "FloorMod": _floor_mod, "DivNoNan": _div_no_nan,
        "NotEqual": _not_equal, "SquaredDifference": _squared_difference, "Square": _square,
        "Rsqrt": _rsqrt, "Erfc": _erfc, "Log1p": _log1p, "Expm1": _expm1, "Relu6": _relu6,
        "LeakyRelu": _leaky_relu, "ClipByValue": _clip_by_value,
        "Softmax": _softmax("Softmax"), "LogSoftmax": _softmax("LogSoftmax"),
        "AddN": _add_n, "Cast": _cast, "All": _bool_reduce("ReduceMin"),
        "Any": _bool_reduce("ReduceMax"), "ArgMax": _arg("ArgMax"), "ArgMin": _arg("ArgMin"),
        "MatMul": _matmul, "BatchMatMul": _batch_matmul, "BatchMatMulV2": _batch_matmul,
        "BatchMatMulV3": _batch_matmul, "Einsum": _einsum, "Cumsum": _cumsum,
    })  # fmt: skip
    return table


LOWERINGS = _table()
