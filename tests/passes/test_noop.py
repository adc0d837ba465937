"""RemoveNoOps: identity-computing nodes are bypassed; graph-output names survive."""

from __future__ import annotations

import numpy as np
import pytest
from pass_testing import F32, I64, Builder, check_pass, needs_ops

from converter.executor.kernels import KERNELS
from ir import DataType, Node, Value
from passes.noop import NO_OP_RULES, RemoveNoOps


def _i64(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


def _single_node(op: str, *args, shape=(2, 3, 4), dtype=F32, **attrs):
    """x -> op(x, *args) -> Relu -> output (the no-op is not feeding a graph output)."""
    b = Builder()
    x = b.input("x", shape, dtype)
    ins = [a if a is None or isinstance(a, Value) else b.const(a) for a in args]
    y = b.op(op, x, *ins, **attrs)
    return b.outputs(b.op("Abs", y))


def _require(*ops: str) -> None:
    missing = needs_ops(*ops) + [o for o in ops if o not in KERNELS]
    if missing:
        pytest.skip(f"op(s)/kernel(s) not available yet: {missing}")


NO_OPS = [
    ("Identity", (), {}),
    ("Cast", (), {"to": int(F32)}),
    ("Reshape", (_i64(2, 3, 4),), {}),
    ("Reshape", (_i64(0, 3, -1),), {}),
    ("Expand", (_i64(3, 4),), {}),
    ("Expand", (_i64(1, 1, 4),), {}),
    ("Transpose", (), {"perm": [0, 1, 2]}),
    ("Unsqueeze", (np.zeros(0, np.int64),), {}),
    ("Squeeze", (), {}),
    ("Slice", (_i64(0, -9), _i64(2**62, 3), _i64(0, 1)), {}),
    ("Slice", (_i64(0), _i64(4), _i64(-1), _i64(1)), {}),
    ("Pad", (_i64(0, 0, 0, 0, 0, 0),), {}),
    ("Pad", (_i64(0, 0, 0, 0, 0, 0),), {"mode": "reflect"}),
    ("Concat", (), {"axis": 1}),
    ("Sum", (), {}),
    ("Max", (), {}),
    ("Min", (), {}),
    ("Mean", (), {}),
    ("Add", (np.zeros(4, np.float32),), {}),
    ("Sub", (np.zeros((1, 3, 1), np.float32),), {}),
    ("Mul", (np.ones((), np.float32),), {}),
    ("Div", (np.ones((2, 3, 4), np.float32),), {}),
    ("Dropout", (), {}),
    ("Dropout", (np.array(0.5, np.float32), np.array(False)), {}),
]


@pytest.mark.parametrize("op,args,attrs", NO_OPS, ids=lambda p: str(p)[:30])
def test_removes_no_op(op: str, args: tuple, attrs: dict) -> None:
    _require(op, "Abs")
    g = _single_node(op, *args, **attrs)
    check_pass(g, RemoveNoOps(), modified=True, ops=["Abs"])
    assert g.nodes[0].inputs[0] is g.inputs[0]


NOT_NO_OPS = [
    ("Cast", (), {"to": int(DataType.FLOAT16)}),
    ("Reshape", (_i64(6, 4),), {}),
    ("Reshape", (_i64(3, 2, 4),), {}),
    ("Reshape", (_i64(2, -1, 2),), {}),
    ("Expand", (_i64(2, 2, 3, 4),), {}),
    ("Transpose", (), {"perm": [0, 2, 1]}),
    ("Transpose", (), {}),
    ("Unsqueeze", (_i64(0),), {}),
    ("Squeeze", (_i64(0),), {"shape": (1, 3, 4)}),
    ("Slice", (_i64(1), _i64(4), _i64(2)), {}),
    ("Slice", (_i64(0), _i64(3), _i64(2)), {}),
    ("Slice", (_i64(-1), _i64(-(2**62)), _i64(0), _i64(-1)), {}),
    ("Pad", (_i64(0, 0, 1, 0, 0, 0),), {}),
    ("Add", (np.zeros((2, 2, 3, 4), np.float32),), {}),
    ("Add", (np.full(4, 1e-30, np.float32),), {}),
    ("Sub", (np.array(1.0, np.float32),), {}),
    ("Mul", (np.zeros((), np.float32),), {}),
    ("Div", (np.full(4, 2.0, np.float32),), {}),
    ("Dropout", (np.array(0.5, np.float32), np.array(True)), {}),
]


@pytest.mark.parametrize("op,args,attrs", NOT_NO_OPS, ids=lambda p: str(p)[:30])
def test_keeps_real_op(op: str, args: tuple, attrs: dict) -> None:
    _require(op, "Abs")
    attrs = dict(attrs)
    shape = attrs.pop("shape", (2, 3, 4))
    g = _single_node(op, *args, shape=shape, **attrs)
    if op == "Dropout":  # training mode is random: compare structure only
        assert not RemoveNoOps()(g).modified
        return
    check_pass(g, RemoveNoOps(), modified=False, ops=[op, "Abs"])


def test_expand_with_same_shape_but_bigger_rank_kept() -> None:
    _require("Expand", "Abs")
    g = _single_node("Expand", _i64(1, 2, 3, 4))
    check_pass(g, RemoveNoOps(), modified=False, ops=["Expand", "Abs"])


def test_reshape_zero_with_allowzero_is_not_a_copy() -> None:
    _require("Reshape")
    b = Builder()
    x = b.input("x", (0, 3, 4))
    node = b.graph.append(Node("Reshape", [x, b.const(_i64(0, 3, 4))], 1, {"allowzero": 1}))
    assert NO_OP_RULES["Reshape"](node) is x  # 0 == 0: still the same shape
    x.shape = (2, 3, 4)
    assert NO_OP_RULES["Reshape"](node) is None
    node.attrs = {}
    assert NO_OP_RULES["Reshape"](node) is x


def test_zero_constant_on_the_left() -> None:
    b = Builder()
    x = b.input("x", (2, 3))
    z = b.const(np.zeros(3, np.float32))
    g = b.outputs(b.op("Abs", b.op("Add", z, x)), b.op("Abs", b.op("Sub", z, x)))
    check_pass(g, RemoveNoOps(), modified=True, ops=["Abs", "Abs", "Sub"])


def test_neutral_constant_of_other_dtype_kept() -> None:
    b = Builder()
    x = b.input("x", (3,), I64)
    g = b.outputs(b.op("Abs", b.op("Mul", x, b.const(np.ones(3, np.int32)))))
    assert not RemoveNoOps()(g).modified


def test_symbolic_dims() -> None:
    _require("Reshape", "Slice")
    b = Builder()
    x = b.input("x", ("N", 3))
    r = b.op("Reshape", x, b.const(_i64(0, 3)))
    s = b.op("Slice", r, b.const(_i64(0)), b.const(_i64(2**63 - 1)), b.const(_i64(0)))
    s2 = b.op("Slice", s, b.const(_i64(0)), b.const(_i64(5)), b.const(_i64(0)))  # N may be > 5
    g = b.outputs(b.op("Abs", s2))
    check_pass(g, RemoveNoOps(), modified=True, ops=["Slice", "Abs"], feeds=None)


def test_chain_of_no_ops_in_one_run() -> None:
    _require("Transpose", "Reshape")
    b = Builder()
    x = b.input("x", (2, 3))
    t = b.op("Transpose", b.op("Identity", x), perm=[0, 1])
    r = b.op("Reshape", b.op("Identity", t), b.const(_i64(2, 3)))
    g = b.outputs(b.op("Abs", r))
    check_pass(g, RemoveNoOps(), modified=True, ops=["Abs"])


def test_graph_output_renames_producer() -> None:
    b = Builder()
    x = b.input("x", (2, 3))
    r = b.op("Relu", x)
    y = b.op("Identity", r)
    y.name = "y"
    g = b.outputs(y)
    check_pass(g, RemoveNoOps(), modified=True, ops=["Relu"])
    assert g.outputs[0] is r and r.name == "y"


def test_graph_output_of_graph_input_becomes_identity() -> None:
    _require("Transpose")
    b = Builder()
    x = b.input("x", (2, 3))
    y = b.op("Transpose", x, perm=[0, 1])
    y.name = "y"
    z = b.op("Identity", x)
    g = b.outputs(y, z)
    check_pass(g, RemoveNoOps(), modified=True, ops=["Identity", "Identity"])
    assert [v.name for v in g.outputs] == ["y", z.name]
    assert all(n.inputs == (x,) for n in g.nodes)


def test_two_graph_outputs_not_merged() -> None:
    b = Builder()
    x = b.input("x", (2, 3))
    r = b.op("Relu", x)
    y = b.op("Identity", r)
    g = b.outputs(r, y)
    check_pass(g, RemoveNoOps(), modified=False, ops=["Relu", "Identity"])


def test_graph_output_of_constant_kept() -> None:
    b = Builder()
    x = b.input("x", (3,))
    y = b.op("Identity", b.const(np.ones(3, np.float32)))
    g = b.outputs(b.op("Abs", x), y)
    check_pass(g, RemoveNoOps(), modified=False, ops=["Abs", "Identity"])


def test_dropout_mask_used_is_kept() -> None:
    _require("Dropout")
    b = Builder()
    x = b.input("x", (2, 3))
    y, mask = b.op("Dropout", x, outputs=2)
    g = b.outputs(b.op("Abs", y), mask)
    check_pass(g, RemoveNoOps(), modified=False, ops=["Dropout", "Abs"])


def test_dropout_unused_mask_feeding_graph_input_output() -> None:
    _require("Dropout")
    b = Builder()
    x = b.input("x", (2, 3))
    y, _mask = b.op("Dropout", x, outputs=2)
    g = b.outputs(y)
    check_pass(g, RemoveNoOps(), modified=True, ops=["Identity"])
    assert len(g.nodes[0].outputs) == 1


def test_no_op_inside_body() -> None:
    b = Builder()
    x = b.input("x", (3,))
    cond = b.input("cond", (), DataType.BOOL)
    then_b, else_b = Builder("then"), Builder("else")
    inner = then_b.op("Relu", x)
    then_b.outputs(then_b.op("Identity", then_b.op("Identity", inner)))
    else_b.outputs(else_b.op("Abs", x))
    g = b.outputs(b.op("If", cond, then_branch=then_b.graph, else_branch=else_b.graph))
    feeds = {"x": np.array([-1, 0, 2], np.float32), "cond": np.array(True)}
    check_pass(g, RemoveNoOps(), modified=True, ops=["If", "Relu", "Abs"], feeds=feeds)
    assert then_b.graph.outputs[0] is inner
