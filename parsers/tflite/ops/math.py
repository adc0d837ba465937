"""Lowerings of TFLite's elementwise, activation, comparison and reduction builtins.

Binary ops broadcast like NumPy in both frameworks. ADD/SUB/MUL/DIV carry a fused
activation. Activations without an IR op of their own are expressed with existing
ops: RELU6 = Clip(0, 6), RELU_N1_TO_1 = Clip(-1, 1), RSQRT = 1/sqrt, SQUARE = x*x,
SQUARED_DIFFERENCE = (a-b)^2, NOT_EQUAL = Not(Equal). Reductions read their axes from a
constant input (REDUCE_ANY/REDUCE_ALL: ReduceMax/ReduceMin of the booleans cast to int32);
ARG_MAX/ARG_MIN produce int64 and are cast to the output type.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ir import DataType
from parsers.tflite.lower import ACT_NONE, OpContext

__all__ = ["INT_SAFE", "LOWERINGS"]


def _act(ctx: OpContext) -> int:
    o = ctx.opts
    if o is None or not hasattr(o, "FusedActivationFunction"):
        return ACT_NONE
    return int(o.FusedActivationFunction())


def _binary(op: str) -> Callable[[OpContext], None]:
    def lower(ctx: OpContext) -> None:
        ctx.finish_op(op, [ctx.input(0), ctx.input(1)], None, _act(ctx))

    return lower


def _unary(op: str, **attrs: object) -> Callable[[OpContext], None]:
    def lower(ctx: OpContext) -> None:
        ctx.emit(op, [ctx.input(0)], dict(attrs), outputs=[ctx.out(0)])

    return lower


def _clip(lo: float, hi: float) -> Callable[[OpContext], None]:
    def lower(ctx: OpContext) -> None:
        x = ctx.input(0)
        ins = [x, ctx.scalar(lo, x, "min"), ctx.scalar(hi, x, "max")]
        ctx.emit("Clip", ins, outputs=[ctx.out(0)])

    return lower


def _variadic(op: str) -> Callable[[OpContext], None]:
    def lower(ctx: OpContext) -> None:
        ins = [ctx.input(i) for i in range(ctx.num_inputs)]
        ctx.emit(op, ins, outputs=[ctx.out(0)])

    return lower


def leaky_relu(ctx: OpContext) -> None:
    ctx.emit("LeakyRelu", [ctx.input(0)], {"alpha": float(ctx.opts.Alpha())},
             outputs=[ctx.out(0)])  # fmt: skip


def gelu(ctx: OpContext) -> None:
    approx = ctx.opts is not None and bool(ctx.opts.Approximate())
    ctx.emit("Gelu", [ctx.input(0)], {"approximate": "tanh" if approx else "none"},
             outputs=[ctx.out(0)])  # fmt: skip


def rsqrt(ctx: OpContext) -> None:
    ctx.emit("Reciprocal", [ctx.one("Sqrt", [ctx.input(0)])], outputs=[ctx.out(0)])


def square(ctx: OpContext) -> None:
    x = ctx.input(0)
    ctx.emit("Mul", [x, x], outputs=[ctx.out(0)])


def squared_difference(ctx: OpContext) -> None:
    d = ctx.one("Sub", [ctx.input(0), ctx.input(1)])
    ctx.emit("Mul", [d, d], outputs=[ctx.out(0)])


def not_equal(ctx: OpContext) -> None:
    eq = ctx.one("Equal", [ctx.input(0), ctx.input(1)])
    ctx.emit("Not", [eq], outputs=[ctx.out(0)])


def floor_div(ctx: OpContext) -> None:
    q = ctx.one("Div", [ctx.input(0), ctx.input(1)])
    if ctx.out_tensor().dtype.is_float:
        ctx.emit("Floor", [q], outputs=[ctx.out(0)])
    else:
        ctx.set_out(0, q)


def floor_mod(ctx: OpContext) -> None:
    fmod = 0 if not ctx.out_tensor().dtype.is_float else 1
    if fmod:  # Python-style modulo for floats: a - floor(a / b) * b
        a, b = ctx.input(0), ctx.input(1)
        q = ctx.one("Floor", [ctx.one("Div", [a, b])])
        ctx.emit("Sub", [a, ctx.one("Mul", [q, b])], outputs=[ctx.out(0)])
        return
    ctx.emit("Mod", [ctx.input(0), ctx.input(1)], outputs=[ctx.out(0)])


def select(ctx: OpContext) -> None:
    ctx.emit("Where", [ctx.input(0), ctx.input(1), ctx.input(2)], outputs=[ctx.out(0)])


def _reduce(op: str) -> Callable[[OpContext], None]:
    def lower(ctx: OpContext) -> None:
        keep = int(bool(ctx.opts.KeepDims())) if ctx.opts is not None else 0
        axes = ctx.const(1)
        if axes is not None:
            axes_v = ctx.ints([int(a) for a in np.ravel(axes)], "axes")
        else:
            axes_v = ctx.one("Cast", [ctx.input(1)], {"to": int(DataType.INT64)})
        ctx.emit(op, [ctx.input(0), axes_v], {"keepdims": keep}, outputs=[ctx.out(0)])

    return lower


def _reduce_bool(op: str) -> Callable[[OpContext], None]:
    """REDUCE_ANY / REDUCE_ALL: the max / min of the booleans as 0/1 integers."""

    def lower(ctx: OpContext) -> None:
        keep = int(bool(ctx.opts.KeepDims())) if ctx.opts is not None else 0
        axes = ctx.const(1)
        if axes is not None:
            axes_v = ctx.ints([int(a) for a in np.ravel(axes)], "axes")
        else:
            axes_v = ctx.one("Cast", [ctx.input(1)], {"to": int(DataType.INT64)})
        x = ctx.one("Cast", [ctx.input(0)], {"to": int(DataType.INT32)})
        y = ctx.one(op, [x, axes_v], {"keepdims": keep})
        ctx.emit("Cast", [y], {"to": int(DataType.BOOL)}, outputs=[ctx.out(0)])

    return lower


def _arg(op: str) -> Callable[[OpContext], None]:
    def lower(ctx: OpContext) -> None:
        axis = int(np.ravel(ctx.need_const(1, "the axis"))[0])
        out = ctx.out(0)
        if ctx.out_tensor().dtype == DataType.INT64:
            ctx.emit(op, [ctx.input(0)], {"axis": axis, "keepdims": 0}, outputs=[out])
            return
        idx = ctx.one(op, [ctx.input(0)], {"axis": axis, "keepdims": 0})
        ctx.emit("Cast", [idx], {"to": int(ctx.out_tensor().dtype)}, outputs=[out])

    return lower


LOWERINGS: dict[str, Callable[[OpContext], None]] = {
    "ADD": _binary("Add"),
    "SUB": _binary("Sub"),
    "MUL": _binary("Mul"),
    "DIV": _binary("Div"),
    "POW": _binary("Pow"),
    "MAXIMUM": _binary("Max"),
    "MINIMUM": _binary("Min"),
    "LESS": _binary("Less"),
    "LESS_EQUAL": _binary("LessOrEqual"),
    "GREATER": _binary("Greater"),
    "GREATER_EQUAL": _binary("GreaterOrEqual"),
    "EQUAL": _binary("Equal"),
    "NOT_EQUAL": not_equal,
    "LOGICAL_AND": _binary("And"),
    "LOGICAL_OR": _binary("Or"),
    "LOGICAL_NOT": _unary("Not"),
    "FLOOR_DIV": floor_div,
    "FLOOR_MOD": floor_mod,
    "SQUARED_DIFFERENCE": squared_difference,
    "ADD_N": _variadic("Sum"),
    "SELECT": select,
    "SELECT_V2": select,
    "EXP": _unary("Exp"),
    "LOG": _unary("Log"),
    "SQRT": _unary("Sqrt"),
    "RSQRT": rsqrt,
    "SQUARE": square,
    "ABS": _unary("Abs"),
    "NEG": _unary("Neg"),
    "SIN": _unary("Sin"),
    "COS": _unary("Cos"),
    "FLOOR": _unary("Floor"),
    "CEIL": _unary("Ceil"),
    "ROUND": _unary("Round"),
    "SIGN": _unary("Sign"),
    "LOGISTIC": _unary("Sigmoid"),
    "TANH": _unary("Tanh"),
    "RELU": _unary("Relu"),
    "RELU6": _clip(0.0, 6.0),
    "RELU_N1_TO_1": _clip(-1.0, 1.0),
    "RELU_0_TO_1": _clip(0.0, 1.0),
    "LEAKY_RELU": leaky_relu,
    "ELU": _unary("Elu"),
    "HARD_SWISH": _unary("HardSwish"),
    "PRELU": _binary("PRelu"),
    "GELU": gelu,
    "MEAN": _reduce("ReduceMean"),
    "SUM": _reduce("ReduceSum"),
    "REDUCE_MAX": _reduce("ReduceMax"),
    "REDUCE_MIN": _reduce("ReduceMin"),
    "REDUCE_PROD": _reduce("ReduceProd"),
    "REDUCE_ANY": _reduce_bool("ReduceMax"),
    "REDUCE_ALL": _reduce_bool("ReduceMin"),
    "ARG_MAX": _arg("ArgMax"),
    "ARG_MIN": _arg("ArgMin"),
}

INT_SAFE = {"MAXIMUM", "MINIMUM", "REDUCE_MAX", "REDUCE_MIN"}
