"""Reduce*, ArgMax/ArgMin and CumSum kernels against onnx.reference on one-node models.

``axes`` (Reduce*) and ``axis`` (CumSum) are given as constant inputs
(initializers in ONNX, const Values in the IR) unless a test says otherwise;
each case also checks the op's shape inference against the kernel's output.
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import onnx.defs
import pytest
from onnx import helper, numpy_helper
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
    "bool": np.bool_,
    **{t: getattr(np, t) for t in "int8 int16 int32 int64 uint8 uint16 uint32 uint64".split()},
}
_TOL = {
    np.dtype(np.float64): 1e-12,
    np.dtype(np.float32): 2e-5,
    np.dtype(np.float16): 4e-3,
    np.dtype(ml_dtypes.bfloat16): 3e-2,
}
_REDUCE = (
    "ReduceSum ReduceMean ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2 "
    "ReduceLogSum ReduceLogSumExp ReduceSumSquare"
).split()
_RNG = np.random.default_rng(1)


def allowed(op: str) -> list[np.dtype]:
    schema = onnx.defs.get_schema(op, OPSET)
    (constraint,) = [c for c in schema.type_constraints if c.type_param_str == "T"]
    names = sorted(s[len("tensor(") : -1] for s in constraint.allowed_type_strs)
    return [np.dtype(_NP[n]) for n in names if n in _NP]


def rand(op: str, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    if dtype == np.bool_:
        return _RNG.random(shape) < 0.5
    if np.issubdtype(dtype, np.integer):
        low = 0 if dtype.kind == "u" or op == "ReduceProd" else -9
        return _RNG.integers(low, 4 if op == "ReduceProd" else 10, size=shape).astype(dtype)
    lo, hi = {"ReduceProd": (0.6, 1.4), "ReduceLogSum": (0.1, 2.0)}.get(op, (-2.0, 2.0))
    return _RNG.uniform(lo, hi, size=shape).astype(dtype)


def _models(op: str, inputs: list[tuple[np.ndarray | None, bool]], attrs: dict[str, Any]):
    """(onnx model, feeds, IR graph, IR node); inputs are (array, is_constant) pairs."""
    names, onnx_inputs, inits, values, feeds = [], [], [], [], {}
    for i, (a, const) in enumerate(inputs):
        name = f"in{i}"
        names.append("" if a is None else name)
        if a is None:
            values.append(None)
        elif const:
            inits.append(numpy_helper.from_array(a, name))
            values.append(ir.Value(name, const=a))
        else:
            tensor_type = helper.np_dtype_to_tensor_dtype(a.dtype)
            onnx_inputs.append(helper.make_tensor_value_info(name, tensor_type, a.shape))
            values.append(ir.Value(name, ir.DataType.from_numpy(a.dtype), a.shape))
            feeds[name] = a
    node = helper.make_node(op, names, ["out"], **attrs)
    out = helper.make_empty_tensor_value_info("out")
    graph = helper.make_graph([node], "g", onnx_inputs, [out], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    irnode = ir.Node(op, values, [ir.Value("out")], attrs=attrs)
    irgraph = ir.Graph(
        inputs=[v for v in values if v is not None and not v.is_const], outputs=[irnode.outputs[0]]
    )
    irgraph.append(irnode)
    return model, feeds, irgraph, irnode


def check(
    op: str,
    inputs: list[tuple[np.ndarray | None, bool]],
    attrs: dict[str, Any] | None = None,
) -> np.ndarray:
    """Compare executor and reference; check inference; return the executor's output."""
    attrs = attrs or {}
    model, feeds, graph, node = _models(op, inputs, attrs)
    expected = np.asarray(ReferenceEvaluator(model).run(None, feeds)[0])
    got = Runtime(graph).run(feeds)["out"]
    dtype, shape = ir.get_op(op).infer(node)[0]
    assert dtype == ir.DataType.from_numpy(got.dtype)
    if shape is not None:
        assert len(shape) == got.ndim
        assert all(d is None or d == g for d, g in zip(shape, got.shape, strict=True))
    if all(const or a is None for a, const in inputs[1:]):  # static attrs: shape fully known
        assert shape == got.shape
    want_dtype = np.dtype(np.int64) if op.startswith("Arg") else inputs[0][0].dtype
    assert got.dtype == want_dtype
    if op == "ReduceSumSquare" and expected.dtype != want_dtype:
        expected = expected.astype(want_dtype)  # the reference widens int32 (np.sum) here
    assert got.dtype == expected.dtype, (got.dtype, expected.dtype)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    tol = _TOL.get(got.dtype)
    if tol is None:
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(
            got.astype(np.float64), expected.astype(np.float64), rtol=tol, atol=tol, equal_nan=True
        )
    return got


def _axes(values: list[int] | None) -> tuple[np.ndarray | None, bool]:
    return (None if values is None else np.array(values, np.int64), True)


# -- Reduce* ---------------------------------------------------------------------------------
DTYPE_CASES = [pytest.param(op, dt, id=f"{op}-{dt}") for op in _REDUCE for dt in allowed(op)]


@pytest.mark.parametrize(("op", "dtype"), DTYPE_CASES)
def test_reduce_dtypes(op: str, dtype: np.dtype) -> None:
    x = rand(op, dtype, (3, 4, 5))
    check(op, [(x, False), _axes([1])])
    check(op, [(x, False), _axes(None)], {"keepdims": 0})


_AXES = [None, [], [0], [-1], [0, 2], [-3, 1], [0, 1, 2]]


@pytest.mark.parametrize("noop", [0, 1])
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("axes", _AXES, ids=str)
@pytest.mark.parametrize("op", _REDUCE)
def test_reduce_axes(op: str, axes: list[int] | None, keepdims: int, noop: int) -> None:
    x = rand(op, np.dtype(np.float32), (2, 3, 4))
    attrs = {"keepdims": keepdims, "noop_with_empty_axes": noop}
    check(op, [(x, False), _axes(axes)], attrs)


@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("op", _REDUCE)
def test_reduce_axes_given_at_run_time(op: str, keepdims: int) -> None:
    x = rand(op, np.dtype(np.float32), (2, 3, 4))
    check(op, [(x, False), (np.array([-1, 0], np.int64), False)], {"keepdims": keepdims})


EMPTY_CASES = [
    pytest.param(op, np.dtype(dt), id=f"{op}-{np.dtype(dt)}")
    for op in _REDUCE
    for dt in (np.float32, np.float16, np.int32)
    # integer mean of nothing is undefined in ONNX
    if np.dtype(dt) in allowed(op) and not (op == "ReduceMean" and dt == np.int32)
]


@pytest.mark.filterwarnings("ignore:Mean of empty slice", "ignore:invalid value encountered")
@pytest.mark.parametrize("axes", [[1], None, [0, 2]], ids=str)
@pytest.mark.parametrize(("op", "dtype"), EMPTY_CASES)
def test_reduce_empty_set(op: str, dtype: np.dtype, axes: list[int] | None) -> None:
    x = np.zeros((2, 0, 3), dtype)
    got = check(op, [(x, False), _axes(axes)])
    identity = {"ReduceProd": 1, "ReduceMean": np.nan}
    if op in ("ReduceMax", "ReduceLogSum", "ReduceLogSumExp"):
        identity[op] = -np.inf if dtype.kind == "f" else np.iinfo(dtype).min
    if op == "ReduceMin":
        identity[op] = np.inf if dtype.kind == "f" else np.iinfo(dtype).max
    if got.size:
        np.testing.assert_array_equal(got, np.full(got.shape, identity.get(op, 0), dtype))


def test_reduce_bool_max_min() -> None:
    x = rand("ReduceMax", np.dtype(np.bool_), (3, 4))
    for op in ("ReduceMax", "ReduceMin"):
        check(op, [(x, False), _axes([1])])
        check(op, [(np.zeros((0, 4), np.bool_), False), _axes([0])])


def test_reduce_integer_mean_truncates_toward_zero() -> None:
    x = np.array([[-7, 0], [1, 2], [5, -2]], np.int32)
    got = check("ReduceMean", [(x, False), _axes([1])], {"keepdims": 0})
    np.testing.assert_array_equal(got, [-3, 1, 1])


def test_reduce_log_sum_exp_is_stable() -> None:
    x = np.array([[1000.0, 1000.0], [-np.inf, -np.inf]], np.float32)
    model, feeds, graph, _ = _models("ReduceLogSumExp", [(x, False), _axes([1])], {})
    got = Runtime(graph).run(feeds)["out"]
    np.testing.assert_allclose(got[:, 0], [1000.0 + np.log(2.0), -np.inf], rtol=1e-6)


def test_reduce_rejects_disallowed_dtype() -> None:
    x = np.ones((2, 2), np.int32)
    model, feeds, graph, _ = _models("ReduceLogSum", [(x, False), _axes([1])], {})
    with pytest.raises(UnsupportedKernel, match="ReduceLogSum"):
        Runtime(graph).run(feeds)


# -- ArgMax / ArgMin -------------------------------------------------------------------------
ARG_DTYPES = [
    pytest.param(op, dt, id=f"{op}-{dt}") for op in ("ArgMax", "ArgMin") for dt in allowed(op)
]


@pytest.mark.parametrize("last", [0, 1])
@pytest.mark.parametrize(("op", "dtype"), ARG_DTYPES)
def test_arg_dtypes_with_ties(op: str, dtype: np.dtype, last: int) -> None:
    x = _RNG.integers(0, 3, size=(3, 4, 5)).astype(dtype)  # many ties
    check(op, [(x, False)], {"axis": 1, "select_last_index": last})


@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("axis", [0, 2, -1, -3])
@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
def test_arg_axes(op: str, axis: int, keepdims: int) -> None:
    x = rand(op, np.dtype(np.float32), (3, 4, 5))
    check(op, [(x, False)], {"axis": axis, "keepdims": keepdims})


# -- CumSum ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", allowed("CumSum"))
def test_cumsum_dtypes(dtype: np.dtype) -> None:
    check("CumSum", [(rand("CumSum", dtype, (3, 4)), False), (np.array(1, np.int64), True)])


@pytest.mark.parametrize("reverse", [0, 1])
@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("axis", [np.int32(0), np.int64(-1), np.int64(1)], ids=repr)
def test_cumsum_attrs(axis: np.integer, exclusive: int, reverse: int) -> None:
    x = rand("CumSum", np.dtype(np.float32), (3, 4, 2))
    attrs = {"exclusive": exclusive, "reverse": reverse}
    check("CumSum", [(x, False), (np.array(axis), True)], attrs)
    check("CumSum", [(x, False), (np.array(axis), False)], attrs)  # axis known at run time only


def test_cumsum_exclusive_reverse_values() -> None:
    x = np.array([1, 2, 3, 4], np.int32)
    axis = (np.array(0, np.int32), True)
    got = check("CumSum", [(x, False), axis], {"exclusive": 1, "reverse": 1})
    np.testing.assert_array_equal(got, [9, 7, 4, 0])


# -- CumProd, normalizations, losses ---------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int32, np.int64])
@pytest.mark.parametrize(("exclusive", "reverse"), [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_cumprod(dtype: Any, exclusive: int, reverse: int) -> None:
    x = rand("ReduceProd", np.dtype(dtype), (3, 4))
    check("CumProd", [(x, False), (np.array(1, np.int64), True)],
          {"exclusive": exclusive, "reverse": reverse})  # fmt: skip


@pytest.mark.parametrize(("p", "axis"), [(1, -1), (2, 0), (2, 1)])
def test_lp_normalization(p: int, axis: int) -> None:
    x = rand("LpNormalization", np.dtype(np.float32), (3, 4))
    if p == 1:  # onnx.reference forgets abs() for p=1 (the spec and backend tests have it)
        x = np.abs(x)
    x[1] = 0  # a zero norm gives 0, not NaN
    check("LpNormalization", [(x, False)], {"p": p, "axis": axis})


@pytest.mark.parametrize("axis", [-1, 1])
def test_rms_normalization(axis: int) -> None:
    x = rand("RMSNormalization", np.dtype(np.float32), (2, 3, 4))
    scale = rand("RMSNormalization", np.dtype(np.float32), (3, 4) if axis == 1 else (4,))
    check("RMSNormalization", [(x, False), (scale, True)], {"axis": axis})


@pytest.mark.parametrize("op", ["NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss"])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize(("weighted", "ignore"), [(False, None), (True, None), (True, 1)])
def test_losses(op: str, reduction: str, weighted: bool, ignore: int | None) -> None:
    x = rand(op, np.dtype(np.float32), (3, 5, 2))
    target = np.array([[0, 1], [4, 1], [2, 3]], np.int64)
    weight = (rand(op, np.dtype(np.float32), (5,)) + 3.0, True) if weighted else (None, True)
    attrs: dict[str, Any] = {"reduction": reduction}
    if ignore is not None:
        attrs["ignore_index"] = ignore
    check(op, [(x, False), (target, True), weight], attrs)
