"""Elementwise kernels against onnx.reference on one-node models, for every ONNX dtype.

Each case builds the same node twice: as an ONNX model run by
``onnx.reference.ReferenceEvaluator``, and as an IR graph run by the executor;
outputs must agree in dtype, shape and value, and the op's shape inference
must predict the kernel's output.
"""

from __future__ import annotations

import math
from typing import Any

import ml_dtypes
import numpy as np
import onnx
import onnx.defs
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

import ir
from converter.executor.registry import UnsupportedKernel
from converter.executor.runtime import Runtime

OPSET = 28
_NP = {
    "float": np.float32,
    "double": np.float64,
    "float16": np.float16,
    "bfloat16": ml_dtypes.bfloat16,
    "float8e4m3fn": ml_dtypes.float8_e4m3fn,
    "float8e4m3fnuz": ml_dtypes.float8_e4m3fnuz,
    "float8e5m2": ml_dtypes.float8_e5m2,
    "float8e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
    "bool": np.bool_,
    "string": object,
    **{t: getattr(np, t) for t in "int8 int16 int32 int64 uint8 uint16 uint32 uint64".split()},
}
_TOL = {
    np.dtype(np.float64): 1e-12,
    np.dtype(np.float32): 2e-6,
    np.dtype(np.float16): 2e-3,
    np.dtype(ml_dtypes.bfloat16): 1.6e-2,
}


def allowed(op: str, param: str = "T") -> list[np.dtype]:
    """The dtypes ONNX allows for ``op``'s type parameter (those NumPy can hold)."""
    schema = onnx.defs.get_schema(op, OPSET)
    (constraint,) = [c for c in schema.type_constraints if c.type_param_str == param]
    names = sorted(s[len("tensor(") : -1] for s in constraint.allowed_type_strs)
    return [np.dtype(_NP[n]) for n in names if n in _NP and not n.startswith("float8")]


def _onnx_model(op: str, inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> Any:
    names = [f"in{i}" for i in range(len(inputs))]
    onnx_inputs = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
        for n, a in zip(names, inputs, strict=True)
        if a is not None
    ]
    used = [n if a is not None else "" for n, a in zip(names, inputs, strict=True)]
    node = helper.make_node(op, used, ["out"], **attrs)
    out = helper.make_empty_tensor_value_info("out")
    graph = helper.make_graph([node], "g", onnx_inputs, [out])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def run_ref(op: str, inputs: list[np.ndarray | None], attrs: dict[str, Any] | None = None):
    """The output of onnx.reference on a one-node model."""
    feeds = {f"in{i}": a for i, a in enumerate(inputs) if a is not None}
    ref = ReferenceEvaluator(_onnx_model(op, inputs, attrs or {}))
    return np.asarray(ref.run(None, feeds)[0])


def run_ir(op: str, inputs: list[np.ndarray | None], attrs: dict[str, Any] | None = None):
    """The executor's output on a one-node IR graph; checks the infer fn against it."""
    values = [
        None if a is None else ir.Value(f"in{i}", ir.DataType.from_numpy(a.dtype), a.shape)
        for i, a in enumerate(inputs)
    ]
    node = ir.Node(op, values, [ir.Value("out")], attrs=attrs or {})
    graph = ir.Graph(inputs=[v for v in values if v is not None], outputs=list(node.outputs))
    graph.append(node)
    feeds = {f"in{i}": a for i, a in enumerate(inputs) if a is not None}
    got = Runtime(graph).run(feeds)["out"]
    dtype, shape = ir.get_op(op).infer(node)[0]
    assert dtype == ir.DataType.from_numpy(got.dtype)
    assert shape == got.shape
    return got


def check(
    op: str,
    inputs: list[np.ndarray | None],
    attrs: dict[str, Any] | None = None,
    tol: float | None = None,
) -> None:
    got, expected = run_ir(op, inputs, attrs), run_ref(op, inputs, attrs)
    assert got.dtype == expected.dtype, (got.dtype, expected.dtype)
    assert got.shape == expected.shape
    tol = tol or _TOL.get(got.dtype)
    if tol is None:
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(
            got.astype(np.float64), expected.astype(np.float64), rtol=tol, atol=tol, equal_nan=True
        )


# -- input generation -------------------------------------------------------------------------
_RNG = np.random.default_rng(0)

_DOMAIN = {  # float ranges where the op is defined and well conditioned
    "Log": (0.1, 4.0),
    "Sqrt": (0.0, 4.0),
    "Asin": (-0.95, 0.95),
    "Acos": (-0.95, 0.95),
    "Atanh": (-0.9, 0.9),
    "Acosh": (1.05, 4.0),
    "Tan": (-1.2, 1.2),
}


def rand(dtype: np.dtype, shape: tuple[int, ...], lo: float = -3.0, hi: float = 3.0) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return _RNG.random(shape) < 0.5
    if dtype.kind == "O":
        return _RNG.choice(np.array(["a", "bc", "d"], dtype=object), size=shape)
    if np.issubdtype(dtype, np.integer):
        low = 0 if dtype.kind == "u" else int(max(lo, -20))
        return _RNG.integers(low, int(min(hi, 20)) + 1, size=shape).astype(dtype)
    return _RNG.uniform(lo, hi, size=shape).astype(dtype)


def unary_input(op: str, dtype: np.dtype) -> np.ndarray:
    x = rand(dtype, (2, 3, 4), *_DOMAIN.get(op, (-3.0, 3.0)))
    if op == "Reciprocal":
        x = np.where(np.abs(x.astype(np.float32)) < 0.25, 1, x).astype(dtype)
    if op in ("Round", "Floor", "Ceil"):  # exact halves: round-half-to-even
        x.reshape(-1)[:8] = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, -0.25, 0.75], dtype)
    if op in ("IsNaN", "IsInf", "Abs", "Sign", "Relu") and x.dtype in _TOL:
        x.reshape(-1)[:3] = np.array([np.nan, np.inf, -np.inf], dtype)
    return x


# -- unary ops and activations ---------------------------------------------------------------
_UNARY = (
    "Abs Neg Floor Ceil Round Sqrt Reciprocal Exp Log Sin Cos Tan Asin Acos Atan Sinh Cosh "
    "Asinh Acosh Atanh Erf Sign Not BitwiseNot Relu Sigmoid HardSwish Tanh Softplus Softsign "
    "Mish Identity"
).split()
_ATTRS: dict[str, list[dict[str, Any]]] = {
    "IsNaN": [{}],
    "IsInf": [{}, {"detect_negative": 0}, {"detect_positive": 0}],
    "LeakyRelu": [{}, {"alpha": 0.25}],
    "HardSigmoid": [{}, {"alpha": 0.25, "beta": 0.375}],
    "Elu": [{}, {"alpha": 0.5}],
    "Selu": [{}, {"alpha": 2.0, "gamma": 3.0}],
    "Celu": [{}, {"alpha": 2.0}],
    "ThresholdedRelu": [{}, {"alpha": 0.5}],
    "Gelu": [{}, {"approximate": "tanh"}],
    "Shrink": [{}, {"bias": 1.5, "lambd": 1.0}],
}
_IDENTITY_TYPES = [np.dtype(t) for t in (np.float32, np.int64, np.bool_, ml_dtypes.bfloat16)]
_REF_FLOAT32 = {"Erf", "Gelu", "HardSwish"}
UNARY_CASES = [
    pytest.param(op, dt, attrs, id=f"{op}-{dt}-{i}")
    for op in (*_UNARY, *_ATTRS)
    for dt in (
        _IDENTITY_TYPES if op == "Identity" else allowed(op, "T1" if op[:2] == "Is" else "T")
    )
    for i, attrs in enumerate(_ATTRS.get(op, [{}]))
]


@pytest.mark.parametrize(("op", "dtype", "attrs"), UNARY_CASES)
def test_unary(op: str, dtype: np.dtype, attrs: dict[str, Any]) -> None:
    # the reference evaluates these in float32 (float attributes of a function body, or
    # np.vectorize(math.erf, otypes="f")); float64 exactness is checked against math.erf below
    tol = 1e-6 if op in _REF_FLOAT32 and dtype == np.float64 else None
    check(op, [unary_input(op, dtype)], attrs, tol)


def test_erf_and_gelu_float64_are_exact() -> None:
    x = np.linspace(-7, 7, 2001)
    want = np.array([math.erf(v) for v in x])
    np.testing.assert_allclose(run_ir("Erf", [x]), want, rtol=1e-14, atol=1e-300)
    gelu = 0.5 * x * (1 + np.array([math.erf(v / math.sqrt(2)) for v in x]))
    np.testing.assert_allclose(run_ir("Gelu", [x]), gelu, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("dtype", allowed("IsNaN", "T1") + [np.dtype(ml_dtypes.float8_e4m3fn)])
@pytest.mark.parametrize("op", ["IsNaN", "IsInf"])
def test_isnan_isinf_float8(op: str, dtype: np.dtype) -> None:
    x = np.array([1.0, np.nan, np.inf, -np.inf, -2.0, 0.0], np.float32).astype(dtype)
    got = run_ir(op, [x])
    want = np.isnan(x.astype(np.float32)) if op == "IsNaN" else np.isinf(x.astype(np.float32))
    np.testing.assert_array_equal(got, want)


def test_unary_keeps_empty_and_scalar_shapes() -> None:
    check("Exp", [np.zeros((0, 3), np.float32)])
    check("Neg", [np.array(3, np.int32)])


@pytest.mark.parametrize("dtype", allowed("PRelu"))
@pytest.mark.parametrize("slope_shape", [(1,), (3, 1), (2, 3, 4)])
def test_prelu(dtype: np.dtype, slope_shape: tuple[int, ...]) -> None:
    check("PRelu", [rand(dtype, (2, 3, 4)), rand(dtype, slope_shape, 0, 3)])


# -- binary ops ------------------------------------------------------------------------------
def binary_inputs(op: str, dtype: np.dtype, sa: tuple, sb: tuple) -> list[np.ndarray]:
    a, b = rand(dtype, sa), rand(dtype, sb)
    if op in ("Div", "Mod") and dtype.kind in "iu":
        b = np.where(b == 0, 3, b).astype(dtype)
    if op == "Mod" and dtype.kind == "f":
        b = np.where(np.abs(b.astype(np.float32)) < 0.5, 1.5, b).astype(dtype)
    if op == "Pow":
        a = rand(dtype, sa, -3, 3) if dtype.kind in "iu" else rand(dtype, sa, 0.5, 2.0)
        b = rand(dtype, sb, 0, 3) if dtype.kind in "iu" else rand(dtype, sb, -2.0, 2.0)
    if op == "BitShift":
        a = rand(dtype, sa, -20, 20)
        b = _RNG.integers(0, 8 * dtype.itemsize, size=sb).astype(dtype)
    if op in ("Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual"):
        b = np.where(_RNG.random(np.broadcast_shapes(sa, sb)) < 0.3, a, b).astype(dtype)
    return [a, b]


_BINARY: dict[str, list[dict[str, Any]]] = {
    **{op: [{}] for op in "Add Sub Mul Div Pow Max Min Sum Mean And Or Xor".split()},
    **{op: [{}] for op in "BitwiseAnd BitwiseOr BitwiseXor".split()},
    **{op: [{}] for op in "Equal Greater GreaterOrEqual Less LessOrEqual".split()},
    "Mod": [{"fmod": 0}, {"fmod": 1}],
    "BitShift": [{"direction": "LEFT"}, {"direction": "RIGHT"}],
}
BINARY_CASES = [
    pytest.param(op, dt, attrs, id=f"{op}-{dt}-{i}")
    for op, variants in _BINARY.items()
    for dt in allowed(op)
    for i, attrs in enumerate(variants)
]


@pytest.mark.parametrize(("op", "dtype", "attrs"), BINARY_CASES)
def test_binary(op: str, dtype: np.dtype, attrs: dict[str, Any]) -> None:
    check(op, binary_inputs(op, dtype, (2, 3, 4), (3, 4)), attrs)


@pytest.mark.parametrize(
    ("sa", "sb"), [((2, 3), (2, 3)), ((2, 1, 4), (1, 3, 1)), ((), (2, 3)), ((0, 3), (1, 3))]
)
@pytest.mark.parametrize("op", ["Add", "Div", "Mod", "Max", "Greater", "And", "BitShift"])
def test_binary_broadcast(op: str, sa: tuple, sb: tuple) -> None:
    dtype = {"And": np.bool_, "BitShift": np.uint16, "Div": np.int32}.get(op, np.float32)
    attrs = {"BitShift": {"direction": "RIGHT"}, "Mod": {"fmod": 1}}.get(op, {})
    check(op, binary_inputs(op, np.dtype(dtype), sa, sb), attrs)


def test_integer_div_and_mod_signs() -> None:
    a = np.array([7, -7, 7, -7, 6, -6], np.int32)
    b = np.array([2, 2, -2, -2, 4, -4], np.int32)
    np.testing.assert_array_equal(run_ir("Div", [a, b]), [3, -3, -3, 3, 1, 1])
    np.testing.assert_array_equal(run_ir("Mod", [a, b]), [1, 1, -1, -1, 2, -2])
    fmod = run_ir("Mod", [a, b], {"fmod": 1})
    np.testing.assert_array_equal(fmod, [1, -1, 1, -1, 2, -2])


def test_int64_div_is_exact_beyond_float64() -> None:
    a = np.array([2**62 + 1, -(2**62) - 1], np.int64)
    got = run_ir("Div", [a, np.array([1, 1], np.int64)])
    np.testing.assert_array_equal(got, a)


def test_bitshift_out_of_range_amounts() -> None:
    x = np.array([-8, -8, 8, 8, 1], np.int8)
    y = np.array([9, -1, 8, -3, 7], np.int8)
    right = run_ir("BitShift", [x, y], {"direction": "RIGHT"})
    np.testing.assert_array_equal(right, [-1, -1, 0, 0, 0])
    left = run_ir("BitShift", [x, y], {"direction": "LEFT"})
    np.testing.assert_array_equal(left, [0, 0, 0, 0, -128])


@pytest.mark.parametrize(
    ("xt", "yt"),
    [
        (np.float32, np.int64),
        (np.int32, np.float32),
        (np.int64, np.int32),
        (np.float16, np.float32),
    ],
)
def test_pow_mixed_dtypes_keep_base_dtype(xt: type, yt: type) -> None:
    x = rand(np.dtype(xt), (3, 4), 1, 3)
    y = rand(np.dtype(yt), (4,), 0, 3)
    check("Pow", [x, y])


def test_pow_negative_integer_exponent() -> None:
    x = np.array([2, 1, -1, -1, 3], np.int64)
    y = np.array([-1, -3, -3, -2, 2], np.int64)
    got = run_ir("Pow", [x, y])
    np.testing.assert_array_equal(got, [0, 1, -1, 1, 9])


_VARIADIC_CASES = [
    (op, dt)
    for op in ("Max", "Min", "Sum", "Mean")
    for dt in (np.float32, np.float16, ml_dtypes.bfloat16, np.int16)
    if not (op in ("Sum", "Mean") and dt == np.int16)  # Sum/Mean are float-only
]


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize(("op", "dtype"), _VARIADIC_CASES)
def test_variadic(op: str, n: int, dtype: type) -> None:
    shapes = [(2, 3, 4), (3, 1), (4,)][:n]
    check(op, [rand(np.dtype(dtype), s) for s in shapes])


@pytest.mark.parametrize("dtype", allowed("Where"))
def test_where(dtype: np.dtype) -> None:
    cond = rand(np.dtype(np.bool_), (2, 1, 4))
    check("Where", [cond, rand(dtype, (3, 1)), rand(dtype, (1, 4))])


@pytest.mark.parametrize("bounds", [(None, None), (-1, None), (None, 1), (-1, 2), (2, -1)])
@pytest.mark.parametrize("dtype", allowed("Clip"))
def test_clip(dtype: np.dtype, bounds: tuple) -> None:
    if dtype.kind == "u":
        bounds = tuple(None if b is None else abs(b) + 2 for b in bounds)
    ins = [None if b is None else np.array(b, dtype) for b in bounds]
    while ins and ins[-1] is None:
        ins.pop()
    check("Clip", [rand(dtype, (2, 3, 4)), *ins])


def test_float16_results_are_rounded_once_from_float32() -> None:
    x = rand(np.dtype(np.float16), (1000,), -4, 4)
    got = run_ir("Gelu", [x])
    x32 = x.astype(np.float32)
    want = run_ir("Gelu", [x32])
    np.testing.assert_array_equal(got, want.astype(np.float16))


@pytest.mark.parametrize(
    ("op", "dtype"),
    [("Exp", np.int32), ("BitwiseAnd", np.float32), ("Not", np.int8), ("Sum", np.int64)],
)
def test_disallowed_dtype_is_unsupported(op: str, dtype: type) -> None:
    x = np.ones((2,), dtype)
    n = len(ir.get_op(op).inputs) if op != "Sum" else 2
    value = ir.Value("x", ir.DataType.from_numpy(np.dtype(dtype)), (2,))
    node = ir.Node(op, [value] * n, [ir.Value("y")])
    graph = ir.Graph(inputs=[value], outputs=list(node.outputs))
    graph.append(node)
    with pytest.raises(UnsupportedKernel, match=op):
        Runtime(graph).run({"x": x})
