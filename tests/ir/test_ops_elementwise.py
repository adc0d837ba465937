"""Declarations of the elementwise and reduction ops: ONNX conformance, traits, inference.

Kernels are checked numerically in tests/converter; here the OpDefs themselves:
their inputs/attributes/defaults against ``onnx.defs`` (latest opset), their
traits, and their shape inference on symbolic and unknown shapes.
"""

from __future__ import annotations

import numpy as np
import onnx.defs
import pytest

import ir
from ir import DataType, Trait
from ir.ops import elementwise, reduce

OPS = {opdef.name: opdef for opdef in (*elementwise.OPS, *reduce.OPS)}
F = DataType.FLOAT


def _onnx_inputs(schema: onnx.defs.OpSchema) -> tuple[str, ...]:
    opt = onnx.defs.OpSchema.FormalParameterOption
    suffix = {opt.Single: "", opt.Optional: "?", opt.Variadic: "*"}
    return tuple(suffix[p.option] for p in schema.inputs)


@pytest.mark.parametrize("name", sorted(OPS))
def test_declaration_matches_onnx_schema(name: str) -> None:
    opdef = OPS[name]
    schema = onnx.defs.get_schema(name)
    assert tuple(i[-1] if i[-1] in "?*" else "" for i in opdef.inputs) == _onnx_inputs(schema)
    assert len(opdef.outputs) == len(schema.outputs)
    assert set(opdef.attrs) == set(schema.attributes)
    for key, spec in opdef.attrs.items():
        proto = schema.attributes[key]
        if proto.required:
            assert spec.required, key
            continue
        default = onnx.helper.get_attribute_value(proto.default_value)
        if isinstance(default, bytes):
            default = default.decode()
        if isinstance(default, float):  # ONNX stores float32
            assert np.float32(spec.default) == np.float32(default), key
        else:
            assert spec.default == default, key


_UNARY = set(
    "Identity Abs Neg Floor Ceil Round Sqrt Reciprocal Exp Log Sin Cos Tan Asin Acos Atan Sinh "
    "Cosh Asinh Acosh Atanh Erf Sign IsNaN IsInf Not BitwiseNot Relu LeakyRelu Sigmoid "
    "HardSigmoid HardSwish Tanh Elu Selu Celu Softplus Softsign ThresholdedRelu Gelu Mish "
    "Shrink RegexFullMatch".split()
)
_COMMUTATIVE = set(
    "Add Mul Max Min Sum Mean And Or Xor BitwiseAnd BitwiseOr BitwiseXor Equal".split()
)


@pytest.mark.parametrize("name", sorted(OPS))
def test_traits(name: str) -> None:
    opdef = OPS[name]
    is_reduce = opdef in reduce.OPS
    assert opdef.has(Trait.ELEMENTWISE) == (not is_reduce)
    assert opdef.has(Trait.UNARY) == (name in _UNARY)
    assert opdef.has(Trait.COMMUTATIVE) == (name in _COMMUTATIVE)
    assert opdef.has(Trait.REDUCTION) == name.startswith("Reduce")
    if opdef.has(Trait.ACTIVATION):
        assert opdef.has(Trait.ELEMENTWISE)


def infer(op: str, *inputs: ir.Value | None, **attrs: object) -> list[tuple]:
    node = ir.Node(op, list(inputs), len(ir.get_op(op).outputs), attrs=dict(attrs))
    return ir.get_op(op).infer(node)


def val(shape: tuple | None, dtype: DataType = F) -> ir.Value:
    return ir.Value("v", dtype, shape)


def const(array: list[int]) -> ir.Value:
    return ir.Value("c", const=np.array(array, np.int64))


@pytest.mark.parametrize("name", sorted(OPS))
def test_inference_survives_unknown_shapes(name: str) -> None:
    opdef = OPS[name]
    n = max(opdef.min_inputs, 1)
    attrs = {"direction": "LEFT"} if name == "BitShift" else {}
    results = infer(name, *[val(None) for _ in range(n)], **attrs)
    assert len(results) == len(opdef.outputs)
    if name in _SCALAR_LOSSES:  # reduction="mean" gives a scalar whatever the input
        results = results[1:]
    if name == "Attention":  # present_key/value and qk output are rank 4 by definition
        results = results[:1]
    assert all(shape is None for _, shape in results)


_SCALAR_LOSSES = {"NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss"}


@pytest.mark.parametrize("name", sorted(_SCALAR_LOSSES))
def test_loss_inference(name: str) -> None:
    x, t = val(("N", 5, 7)), val(("N", 7), DataType.INT64)
    assert infer(name, x, t)[0] == (F, ())
    assert infer(name, x, t, reduction="none")[0] == (F, ("N", 7))


@pytest.mark.parametrize(
    ("a", "b", "out"),
    [
        (("N", 3, 1), (4,), ("N", 3, 4)),
        ((None, 3), (2, 1, 3), (2, None, 3)),
        (("N", 1), ("N", 5), ("N", 5)),
        ((), (2,), (2,)),
        (None, (2,), None),
    ],
)
def test_binary_broadcast_inference(a: tuple | None, b: tuple | None, out: tuple | None) -> None:
    assert infer("Add", val(a), val(b)) == [(F, out)]
    assert infer("Less", val(a), val(b)) == [(DataType.BOOL, out)]


def test_inference_dtypes() -> None:
    x16 = val(("N", 3), DataType.FLOAT16)
    assert infer("IsNaN", x16) == [(DataType.BOOL, ("N", 3))]
    assert infer("IsInf", x16) == [(DataType.BOOL, ("N", 3))]
    assert infer("Pow", val((2, 3), DataType.INT32), val((3,))) == [(DataType.INT32, (2, 3))]
    cond = val((2, 1, 1), DataType.BOOL)
    assert infer("Where", cond, val((3, 1), DataType.INT8), val((4,), DataType.INT8)) == [
        (DataType.INT8, (2, 3, 4))
    ]
    assert infer("Clip", x16, None, val((), DataType.FLOAT16)) == [(DataType.FLOAT16, ("N", 3))]
    assert infer("PRelu", val(("N", 3, 4)), val((3, 1))) == [(F, ("N", 3, 4))]
    assert infer("Max", val((3, 1)), val((4,)), val((2, 1, 1))) == [(F, (2, 3, 4))]


@pytest.mark.parametrize(
    ("axes", "attrs", "out"),
    [
        ([-1], {"keepdims": 0}, ("N", 3)),
        ([0, 2], {}, (1, 3, 1)),
        (None, {}, (1, 1, 1)),
        (None, {"keepdims": 0}, ()),
        ([], {"keepdims": 0}, ()),
        (None, {"noop_with_empty_axes": 1}, ("N", 3, 4)),
        ([], {"noop_with_empty_axes": 1, "keepdims": 0}, ("N", 3, 4)),
        ([1], {"noop_with_empty_axes": 1, "keepdims": 0}, ("N", 4)),
    ],
)
def test_reduce_inference_constant_axes(axes: list[int] | None, attrs: dict, out: tuple) -> None:
    axes_value = None if axes is None else const(axes)
    for op in ("ReduceSum", "ReduceLogSumExp", "ReduceMax"):
        assert infer(op, val(("N", 3, 4)), axes_value, **attrs) == [(F, out)]


def test_reduce_inference_runtime_axes() -> None:
    axes = val((1,), DataType.INT64)
    assert infer("ReduceMean", val(("N", 1, 4)), axes) == [(F, (None, 1, None))]
    assert infer("ReduceMean", val(("N", 1, 4)), axes, keepdims=0) == [(F, None)]
    assert infer("ReduceMean", val(None), const([0])) == [(F, None)]


def test_arg_and_cumsum_inference() -> None:
    x = val(("N", 3, 4), DataType.FLOAT16)
    assert infer("ArgMax", x, axis=-1) == [(DataType.INT64, ("N", 3, 1))]
    assert infer("ArgMin", x, axis=1, keepdims=0) == [(DataType.INT64, ("N", 4))]
    assert infer("CumSum", x, val((), DataType.INT32)) == [(DataType.FLOAT16, ("N", 3, 4))]
