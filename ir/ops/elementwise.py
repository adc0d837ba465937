"""Elementwise ops: unary math, activations, binary/variadic arithmetic, logic, comparisons.

Semantics: the ONNX operator spec (latest opset, onnx 1.23). Binary and
variadic ops broadcast multidirectionally (NumPy rules); PRelu broadcasts
``slope`` unidirectionally to ``X``. Results keep the dtype of the first data
input, except comparisons/IsNaN/IsInf (bool) and Where (dtype of ``X``).
Notable details:

- Div on integers truncates toward zero; Mod ``fmod=0`` is floor-mod (sign of
  the divisor), ``fmod=1`` is C fmod (sign of the dividend).
- Pow's output has the base's dtype whatever the exponent's dtype.
- BitShift shifts right arithmetically on signed types; a shift amount that is
  negative or >= the bit width yields the sign fill (-1 or 0).
- Clip takes ``min``/``max`` as optional scalar inputs; ``min > max`` gives ``max``.
- SwiGLU(A, B) = A * sigmoid(alpha * A) * B (equal shapes; Swish is in ir/ops/fused.py).
- Strings: StringConcat concatenates with broadcasting; RegexFullMatch tells
  (bool) whether the whole string matches ``pattern`` (RE2 syntax; run with
  Python's ``re``, which agrees on the common subset).
"""

from __future__ import annotations

from ir.dtypes import DataType
from ir.ops.base import FLOAT, INT, REQUIRED, STRING, Attr, OpDef, Trait, op
from ir.ops.infer import broadcast, broadcast_as, broadcast_bool, fixed, same_as_input

E, U, C, A = Trait.ELEMENTWISE, Trait.UNARY, Trait.COMMUTATIVE, Trait.ACTIVATION
Q = Trait.QUANTIZABLE


def _unary(
    name: str, *extra: Trait, attrs: dict[str, Attr] | None = None, infer=same_as_input
) -> OpDef:
    return op(name, "X", "Y", attrs=attrs, traits={E, U, *extra}, infer=infer)


def _act(name: str, *extra: Trait, attrs: dict[str, Attr] | None = None) -> OpDef:
    return _unary(name, A, *extra, attrs=attrs)


def _binary(name: str, *extra: Trait, attrs: dict[str, Attr] | None = None, infer=broadcast):
    return op(name, "A B", "C", attrs=attrs, traits={E, *extra}, infer=infer)


def _variadic(name: str, out: str, *extra: Trait) -> OpDef:
    return op(name, "data_0*", out, traits={E, *extra}, infer=broadcast)


_UNARY_MATH = (
    "Abs Neg Floor Ceil Round Sqrt Reciprocal Exp Log Sin Cos Tan Asin Acos Atan "
    "Sinh Cosh Asinh Acosh Atanh Erf Sign Not BitwiseNot"
).split()

OPS: tuple[OpDef, ...] = (
    _unary("Identity", Trait.NO_OP_CANDIDATE),
    *(_unary(name) for name in _UNARY_MATH),
    _unary("IsNaN", infer=fixed(DataType.BOOL)),
    _unary(
        "IsInf",
        attrs={"detect_negative": INT(1), "detect_positive": INT(1)},
        infer=fixed(DataType.BOOL),
    ),
    # activations
    _act("Relu", Q),
    # float defaults are the float32 values ONNX stores (0.01 -> 0.009999999776482582)
    _act("LeakyRelu", Q, attrs={"alpha": FLOAT(0.009999999776482582)}),
    op("PRelu", "X slope", "Y", traits={E, A, Q}, infer=same_as_input),
    _act("Sigmoid", Q),
    _act("HardSigmoid", Q, attrs={"alpha": FLOAT(0.20000000298023224), "beta": FLOAT(0.5)}),
    _act("HardSwish", Q),
    _act("Tanh", Q),
    _act("Elu", attrs={"alpha": FLOAT(1.0)}),
    _act(
        "Selu",
        attrs={
            "alpha": FLOAT(1.67326319217681884765625),
            "gamma": FLOAT(1.05070102214813232421875),
        },
    ),
    _act("Celu", attrs={"alpha": FLOAT(1.0)}),
    _act("Softplus"),
    _act("Softsign"),
    _act("ThresholdedRelu", attrs={"alpha": FLOAT(1.0)}),
    _act("Gelu", attrs={"approximate": STRING("none")}),
    _act("Mish"),
    op("SwiGLU", "A B", "Y", attrs={"alpha": FLOAT(1.0)}, traits={E}, infer=broadcast),
    _act("Shrink", attrs={"bias": FLOAT(0.0), "lambd": FLOAT(0.5)}),
    # binary arithmetic
    _binary("Add", C, Q),
    _binary("Sub", Q),
    _binary("Mul", C, Q),
    _binary("Div"),
    op("Pow", "X Y", "Z", traits={E}, infer=broadcast),
    _binary("Mod", attrs={"fmod": INT(0)}),
    _variadic("Max", "max", C, Q),
    _variadic("Min", "min", C, Q),
    _variadic("Sum", "sum", C),
    _variadic("Mean", "mean", C),
    # logic and bits
    _binary("And", C),
    _binary("Or", C),
    _binary("Xor", C),
    op("BitShift", "X Y", "Z", attrs={"direction": STRING(REQUIRED)}, traits={E}, infer=broadcast),
    _binary("BitwiseAnd", C),
    _binary("BitwiseOr", C),
    _binary("BitwiseXor", C),
    # comparisons
    _binary("Equal", C, infer=broadcast_bool),
    _binary("Greater", infer=broadcast_bool),
    _binary("GreaterOrEqual", infer=broadcast_bool),
    _binary("Less", infer=broadcast_bool),
    _binary("LessOrEqual", infer=broadcast_bool),
    # strings
    op("StringConcat", "X Y", "Z", traits={E}, infer=broadcast),
    _unary("RegexFullMatch", attrs={"pattern": STRING(None)}, infer=fixed(DataType.BOOL)),
    # ternary
    op("Where", "condition X Y", "output", traits={E}, infer=broadcast_as(1)),
    op("Clip", "input min? max?", "output", traits={E, Q}, infer=same_as_input),
)
