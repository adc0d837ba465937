"""If / Loop / Scan kernels against hand-computed results (bodies read outer values)."""

from __future__ import annotations

import numpy as np

from converter.executor.runtime import Runtime
from ir import DataType, Graph, Node, Value


def _if_graph() -> Graph:
    g = Graph()
    c = Value("c", DataType.BOOL, ())
    x = Value("x", DataType.FLOAT, (3,))
    g.inputs = [c, x]
    then = Graph(name="then")
    t = then.append(Node("Relu", [x], name="t"))  # reads outer x
    then.outputs = [t.outputs[0]]
    els = Graph(name="else")
    e = els.append(Node("Mul", [x, Value("m1", const=np.float32(-1.0).reshape(()))], name="e"))
    els.outputs = [e.outputs[0]]
    n = g.append(Node("If", [c], 1, {"then_branch": then, "else_branch": els}, name="if"))
    g.outputs = [n.outputs[0]]
    return g


def test_if_picks_branch_and_reads_outer_scope():
    rt = Runtime(_if_graph())
    x = np.array([-1.0, 0.0, 2.0], np.float32)
    (y_true,) = rt.run({"c": np.array(True), "x": x}).values()
    (y_false,) = rt.run({"c": np.array(False), "x": x}).values()
    np.testing.assert_array_equal(y_true, [0.0, 0.0, 2.0])
    np.testing.assert_array_equal(y_false, [1.0, -0.0, -2.0])


def _loop_graph() -> Graph:
    """h = h * w + 1 for M steps (w from the outer graph); scan output = h each step."""
    g = Graph()
    trip = Value("M", DataType.INT64, ())
    h0 = Value("h0", DataType.FLOAT, (2,))
    w = Value("w", DataType.FLOAT, (2,))
    g.inputs = [trip, h0, w]
    body = Graph(name="body")
    i = Value("i", DataType.INT64, ())
    cin = Value("cond_in", DataType.BOOL, ())
    h = Value("h", DataType.FLOAT, (2,))
    body.inputs = [i, cin, h]
    mul = body.append(Node("Mul", [h, w], name="mul"))
    one = Value("one", const=np.ones(2, np.float32))
    add = body.append(Node("Add", [mul.outputs[0], one], name="add"))
    ident = body.append(Node("Identity", [cin], name="keep"))
    scan = body.append(Node("Identity", [add.outputs[0]], name="scan"))
    body.outputs = [ident.outputs[0], add.outputs[0], scan.outputs[0]]
    loop = g.append(Node("Loop", [trip, None, h0], 2, {"body": body}, name="loop"))
    g.outputs = list(loop.outputs)
    return g


def test_loop_carries_state_and_stacks_scan_outputs():
    rt = Runtime(_loop_graph())
    out = rt.run(
        {
            "M": np.array(3, np.int64),
            "h0": np.array([1.0, 2.0], np.float32),
            "w": np.array([2.0, 0.5], np.float32),
        }
    )
    final, trace = out.values()
    expect = []
    h = np.array([1.0, 2.0], np.float32)
    for _ in range(3):
        h = h * np.array([2.0, 0.5], np.float32) + 1
        expect.append(h)
    np.testing.assert_allclose(final, expect[-1])
    np.testing.assert_allclose(trace, np.stack(expect))


def test_loop_zero_trips_returns_initial_state():
    rt = Runtime(_loop_graph())
    out = rt.run(
        {"M": np.array(0, np.int64), "h0": np.ones(2, np.float32), "w": np.ones(2, np.float32)}
    )
    final, trace = out.values()
    np.testing.assert_array_equal(final, np.ones(2))
    assert trace.shape[0] == 0


def test_scan_cumulative_sum_reverse():
    g = Graph()
    s0 = Value("s0", DataType.FLOAT, (2,))
    xs = Value("xs", DataType.FLOAT, (4, 2))
    g.inputs = [s0, xs]
    body = Graph(name="body")
    s = Value("s", DataType.FLOAT, (2,))
    x = Value("x", DataType.FLOAT, (2,))
    body.inputs = [s, x]
    add = body.append(Node("Add", [s, x], name="add"))
    out = body.append(Node("Identity", [add.outputs[0]], name="out"))
    body.outputs = [add.outputs[0], out.outputs[0]]
    node = g.append(
        Node(
            "Scan",
            [s0, xs],
            2,
            {"body": body, "num_scan_inputs": 1, "scan_input_directions": [1]},
            name="scan",
        )
    )
    g.outputs = list(node.outputs)
    data = np.arange(8, dtype=np.float32).reshape(4, 2)
    final, ys = Runtime(g).run({"s0": np.zeros(2, np.float32), "xs": data}).values()
    np.testing.assert_array_equal(final, data.sum(0))
    np.testing.assert_array_equal(ys, np.cumsum(data[::-1], axis=0))
