"""FoldConstants: evaluates constant subgraphs with the executor, never bloating."""

from __future__ import annotations

import numpy as np
import pytest
from pass_testing import I64, Builder, check_pass

from ir import DataType
from passes.base import PassContext
from passes.fold import FoldConstants


def test_folds_constant_chain_into_consumer() -> None:
    b = Builder()
    x = b.input("x", (2, 3))
    c = b.op("Add", b.const(np.ones(3, np.float32)), b.const(np.full(3, 2, np.float32)))
    d = b.op("Mul", c, b.const(np.float32(0.5)))
    g = b.outputs(b.op("Mul", x, d))
    check_pass(g, FoldConstants(), modified=True, ops=["Mul"])
    (node,) = g.nodes
    assert node.inputs[1] is d and d.name.startswith("mul_")
    np.testing.assert_array_equal(d.const, np.full(3, 1.5, np.float32))


def test_nothing_to_fold() -> None:
    b = Builder()
    x = b.input("x", (2, 3))
    g = b.outputs(b.op("Relu", b.op("Add", x, b.const(np.ones(3, np.float32)))))
    check_pass(g, FoldConstants(), modified=False, ops=["Add", "Relu"])


def test_folded_graph_output_keeps_name() -> None:
    b = Builder()
    x = b.input("x", (3,))
    y = b.op("Neg", b.const(np.arange(3, dtype=np.float32)))
    g = b.outputs(b.op("Add", x, y), y)
    check_pass(g, FoldConstants(), modified=True, ops=["Add"])
    assert g.outputs[1] is y and y.is_const and y.producer is None


def test_shape_gather_unsqueeze_concat_reshape_collapses() -> None:
    b = Builder()
    x = b.input("x", (2, 3, 4))
    s = b.op("Shape", x)
    d0 = b.op("Gather", s, b.const(np.array(0, np.int64)), axis=0)
    u = b.op("Unsqueeze", d0, b.const(np.array([0], np.int64)))
    cat = b.op("Concat", u, b.const(np.array([-1], np.int64)), axis=0)
    g = b.outputs(b.op("Reshape", x, cat))
    check_pass(g, FoldConstants(), modified=True, ops=["Reshape"])
    np.testing.assert_array_equal(cat.const, [2, -1])
    assert cat.dtype == I64


def test_shape_of_dynamic_input_stays() -> None:
    b = Builder()
    x = b.input("x", ("N", 3))
    s = b.op("Shape", x)
    g = b.outputs(b.op("Reshape", x, b.op("Concat", s, axis=0)))
    check_pass(g, FoldConstants(), modified=False, ops=["Shape", "Concat", "Reshape"])


def test_size_of_static_input() -> None:
    b = Builder()
    x = b.input("x", (2, 3))
    n = b.op("Cast", b.op("Size", x), to=int(DataType.FLOAT))
    g = b.outputs(b.op("Add", x, n))
    check_pass(g, FoldConstants(), modified=True, ops=["Add"])
    assert n.const == np.float32(6)


def _constant_of_shape_graph(shape: list[int]):
    b = Builder()
    x = b.input("x", tuple(shape))
    filled = b.op(
        "ConstantOfShape", b.const(np.array(shape, np.int64)), value=np.array([1.0], np.float32)
    )
    return b.outputs(b.op("Add", x, filled))


def test_constant_of_shape_large_stays_small_folds() -> None:
    big = _constant_of_shape_graph([1024, 1024])
    check_pass(big, FoldConstants(), modified=False, ops=["ConstantOfShape", "Add"])
    small = _constant_of_shape_graph([4])
    check_pass(small, FoldConstants(), modified=True, ops=["Add"])


def test_size_limit_from_options_and_field() -> None:
    for ctx in (PassContext(fold_size_limit=8), PassContext(options={"fold_size_limit": 8})):
        g = _constant_of_shape_graph([4])  # 16 bytes out, 8 bytes of shape input freed
        check_pass(g, FoldConstants(ctx), modified=False, ops=["ConstantOfShape", "Add"])
    g = _constant_of_shape_graph([4])
    check_pass(g, FoldConstants(PassContext(fold_size_limit=16)), modified=True, ops=["Add"])


@pytest.mark.parametrize("op,extra", [("Expand", {}), ("Tile", {})])
def test_growing_ops_not_folded_beyond_limit(op: str, extra: dict) -> None:
    b = Builder()
    x = b.input("x", (64, 64))
    w = b.const(np.arange(64, dtype=np.float32).reshape(1, 64))
    arg = [64, 64] if op == "Expand" else [64, 1]
    grown = b.op(op, w, b.const(np.array(arg, np.int64)), **extra)
    g = b.outputs(b.op("Add", x, grown))
    ctx = PassContext(fold_size_limit=1024)  # 16 KiB result, 256 + 16 bytes in
    check_pass(g, FoldConstants(ctx), modified=False, ops=[op, "Add"])


def test_large_weight_read_once_folds_shared_one_does_not() -> None:
    ctx = PassContext(fold_size_limit=64)
    b = Builder()
    x = b.input("x", (8, 16))
    w = b.const(np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32))
    g = b.outputs(b.op("Add", x, b.op("Transpose", b.op("Transpose", w, perm=[1, 0]), perm=[1, 0])))
    check_pass(g, FoldConstants(ctx), modified=True, ops=["Add"])

    b = Builder()
    x = b.input("x", (8, 16))
    w = b.const(np.ones((16, 8), np.float32))
    t = b.op("Transpose", w, perm=[1, 0])
    g = b.outputs(b.op("Add", x, t), b.op("Add", x, b.op("Transpose", w, perm=[1, 0])))
    check_pass(g, FoldConstants(ctx), modified=False, ops=["Transpose"] * 2 + ["Add"] * 2)


def test_oversized_result_is_not_computed(monkeypatch) -> None:
    import passes.fold as fold

    b = Builder()
    x = b.input("x", (1024, 1024))
    filled = b.op("ConstantOfShape", b.const(np.array([1024, 1024], np.int64)))
    g = b.outputs(b.op("Add", x, filled))
    monkeypatch.setattr(fold, "_evaluate", lambda *a: pytest.fail("evaluated"))
    assert not FoldConstants()(g).modified


def test_kernel_failure_skips_node() -> None:
    b = Builder(infer=False)
    x = b.input("x", (2, 3))
    bad = b.op("Reshape", b.const(np.ones(6, np.float32)), b.const(np.array([4, 4], np.int64)))
    b.outputs(b.op("Add", x, bad))
    assert not FoldConstants()(b.graph).modified
    assert [n.op for n in b.graph.nodes] == ["Reshape", "Add"]


def test_folds_inside_if_body() -> None:
    b = Builder()
    x = b.input("x", (3,))
    cond = b.input("cond", (), DataType.BOOL)
    then_b = Builder("then")
    then_b.outputs(then_b.op("Add", x, then_b.op("Neg", then_b.const(np.ones(3, np.float32)))))
    else_b = Builder("else")
    else_b.outputs(else_b.op("Relu", x))
    g = b.outputs(b.op("If", cond, then_branch=then_b.graph, else_branch=else_b.graph))
    for flag in (True, False):
        feeds = {"x": np.array([-1, 0, 2], np.float32), "cond": np.array(flag)}
        check_pass(g, FoldConstants(), modified=flag, ops=["If", "Add", "Relu"], feeds=feeds)


def test_integer_arithmetic_keeps_dtype() -> None:
    b = Builder()
    x = b.input("x", (2,), I64)
    c = b.op("Div", b.const(np.array([7, -7], np.int64)), b.const(np.array([2, 2], np.int64)))
    g = b.outputs(b.op("Add", x, c))
    check_pass(g, FoldConstants(), modified=True, ops=["Add"])
    assert c.const.dtype == np.int64
    np.testing.assert_array_equal(c.const, [3, -3])


def test_training_dropout_not_folded() -> None:
    b = Builder()
    x = b.input("x", (4,))
    w = b.const(np.ones(4, np.float32))
    d = b.op("Dropout", w, b.const(np.array(0.5, np.float32)), b.const(np.array(True)))
    b.outputs(b.op("Add", x, d))
    assert not FoldConstants()(b.graph).modified
