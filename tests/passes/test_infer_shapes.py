"""InferShapes: merges OpDef inference into values without losing what is known."""

from __future__ import annotations

import numpy as np
import pytest
from pass_testing import F32, I64, Builder, check_pass

from ir import DataType, Graph, Node, Value
from passes.infer_shapes import InferShapes, merge_shape


def test_merge_shape_rules() -> None:
    assert merge_shape(None, (1, "N")) == (1, "N")
    assert merge_shape((2, 3), None) == (2, 3)
    assert merge_shape((None, "N", 3), (5, 6, None)) == (5, 6, 3)
    assert merge_shape(("N",), ("M",)) == ("N",)  # a symbol only yields to an int
    assert merge_shape((4,), (5,)) == (4,)  # a known int is never replaced
    assert merge_shape((4, 2), (4,)) == (4, 2)  # rank conflict keeps the old
    assert merge_shape((None,), (np.int64(7),)) == (7,)


def test_infers_chain_and_reports_modified() -> None:
    b = Builder(infer=False)
    x = b.input("x", ("N", 3))
    r = b.op("Relu", x)
    y = b.op("Add", r, b.const(np.ones(3, np.float32)))
    g = b.outputs(y)
    check_pass(g, InferShapes(), modified=True, ops=["Relu", "Add"])
    assert (r.dtype, r.shape) == (F32, ("N", 3))
    assert (y.dtype, y.shape) == (F32, ("N", 3))


def test_keeps_known_dims_and_refines_symbols() -> None:
    b = Builder(infer=False)
    x = b.input("x", (4, 3))
    y = b.op("Relu", x)
    y.shape = ("batch", 3)
    z = b.op("Relu", y)
    z.shape = (None, None)
    z.dtype = DataType.FLOAT16  # a known dtype stays, even if inference disagrees
    g = b.outputs(z)
    assert InferShapes()(g).modified
    assert y.shape == (4, 3)
    assert z.shape == (4, 3) and z.dtype == DataType.FLOAT16
    assert not InferShapes()(g).modified


def test_infer_error_is_skipped() -> None:
    b = Builder(infer=False)
    x = b.input("x", (2, 3))
    y = b.input("y", (4, 3))
    bad = b.op("Add", x, y)  # not broadcastable: inference raises
    ok = b.op("Relu", x)
    b.outputs(bad, ok)
    assert InferShapes()(b.graph).modified
    assert bad.shape is None and ok.shape == (2, 3)


def test_unknown_op_is_skipped() -> None:
    g = Graph()
    x = Value("x", F32, (2,))
    g.inputs.append(x)
    node = g.append(Node("NotAnOp", [x], 1))
    g.outputs.append(node.outputs[0])
    assert not InferShapes()(g).modified


def test_if_bodies_then_node() -> None:
    b = Builder(infer=False)
    x = b.input("x", (2, 3))
    cond = b.input("cond", (), DataType.BOOL)
    then_b, else_b = Builder("then", infer=False), Builder("else", infer=False)
    then_b.outputs(then_b.op("Relu", x))
    else_b.outputs(else_b.op("Sigmoid", x))
    y = b.op("If", cond, then_branch=then_b.graph, else_branch=else_b.graph)
    g = b.outputs(y)
    check_pass(g, InferShapes(), modified=True, ops=["If", "Relu", "Sigmoid"])
    assert then_b.graph.outputs[0].shape == (2, 3)
    assert (y.dtype, y.shape) == (F32, (2, 3))


def test_shape_of_static_input() -> None:
    b = Builder(infer=False)
    x = b.input("x", (2, 5, 7))
    s = b.op("Shape", x, start=1)
    g = b.outputs(s)
    check_pass(g, InferShapes(), modified=True, ops=["Shape"])
    assert (s.dtype, s.shape) == (I64, (2,))


@pytest.mark.parametrize("shape", [None, ("N", None)])
def test_unknown_input_shapes_never_crash(shape) -> None:
    b = Builder(infer=False)
    x = b.input("x", (2, 3))
    x.shape = shape
    y = b.op("Reshape", x, b.const(np.array([-1], np.int64)))
    z = b.op("Transpose", y)
    b.outputs(z)
    InferShapes()(b.graph)
    assert y.dtype == F32 and z.dtype == F32
