"""RemoveDeadNodes: nodes reaching no graph output go, in every graph of the tree."""

from __future__ import annotations

import numpy as np
from pass_testing import Builder, check_pass

from ir import DataType
from passes.dce import RemoveDeadNodes


def test_removes_dead_branch_and_its_constants() -> None:
    b = Builder()
    x = b.input("x", (2, 3))
    w = b.const(np.ones(3, np.float32), name="w_dead")
    b.op("Relu", b.op("Add", x, w))  # dead
    g = b.outputs(b.op("Sigmoid", x))
    check_pass(g, RemoveDeadNodes(), modified=True, ops=["Sigmoid"])
    assert "w_dead" not in {v.name for v in g.values()}
    assert not w.uses


def test_all_live() -> None:
    b = Builder()
    x = b.input("x", (2, 3))
    y = b.op("Relu", x)
    g = b.outputs(b.op("Add", y, y), y)
    check_pass(g, RemoveDeadNodes(), modified=False, ops=["Relu", "Add"])


def test_unused_graph_input_stays() -> None:
    b = Builder()
    x = b.input("x", (2,))
    b.input("unused", (2,))
    g = b.outputs(b.op("Relu", x))
    check_pass(g, RemoveDeadNodes(), modified=False, ops=["Relu"])
    assert [v.name for v in g.inputs] == ["x", "unused"]


def test_multi_output_node_kept_when_one_output_used() -> None:
    b = Builder()
    x = b.input("x", (4, 3))
    first, _second = b.op("Split", x, b.const(np.array([2, 2], np.int64)), outputs=2, axis=0)
    g = b.outputs(b.op("Relu", first))
    check_pass(g, RemoveDeadNodes(), modified=False, ops=["Split", "Relu"])


def _if_graph():
    """Outer value ``feeds_body`` is read only inside the then-branch; bodies hold dead nodes."""
    b = Builder()
    x = b.input("x", (3,))
    cond = b.input("cond", (), DataType.BOOL)
    feeds_body = b.op("Neg", x)
    dead_outer = b.op("Sigmoid", x)
    then_b = Builder("then")
    then_b.op("Tanh", feeds_body)  # dead inside the body, but feeds_body stays live below
    then_b.outputs(then_b.op("Relu", feeds_body))
    else_b = Builder("else")
    else_b.op("Tanh", dead_outer)  # dead: so dead_outer is dead too
    else_b.outputs(else_b.op("Abs", x))
    return b.outputs(b.op("If", cond, then_branch=then_b.graph, else_branch=else_b.graph))


def test_body_reads_keep_outer_values_and_bodies_are_swept() -> None:
    g = _if_graph()
    for flag in (True, False):
        g = _if_graph()
        feeds = {"x": np.array([-1, 0, 2], np.float32), "cond": np.array(flag)}
        check_pass(
            g, RemoveDeadNodes(), modified=True, ops=["Neg", "If", "Relu", "Abs"], feeds=feeds
        )


def test_dead_control_flow_node_removed_with_bodies() -> None:
    b = Builder()
    x = b.input("x", (3,))
    cond = b.input("cond", (), DataType.BOOL)
    outer = b.op("Neg", x)
    then_b, else_b = Builder("then"), Builder("else")
    then_b.outputs(then_b.op("Relu", outer))
    else_b.outputs(else_b.op("Abs", x))
    b.op("If", cond, then_branch=then_b.graph, else_branch=else_b.graph)
    g = b.outputs(b.op("Tanh", x))
    feeds = {"x": np.array([-1, 0, 2], np.float32), "cond": np.array(True)}
    check_pass(g, RemoveDeadNodes(), modified=True, ops=["Tanh"], feeds=feeds)
