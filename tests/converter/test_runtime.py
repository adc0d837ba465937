"""Runtime planning: slot lifetimes, buffer donation, outer-scope reads, profiling.

Donation tests swap the Neg/Abs kernels for "clobbering" ones: when the
runtime donates their input they overwrite it with NaN after computing the
result, so any value that wrongly shared that buffer shows up as NaN.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from converter.executor import runtime as runtime_mod
from converter.executor.registry import KernelContext
from converter.executor.runtime import ExecutionError, Runtime
from ir import DataType, Graph, Node, Value

F32 = DataType.FLOAT


@pytest.fixture
def donations(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[int, ...]]]:
    """Clobbering Neg/Abs kernels; the list records (node name, ctx.donated) per call."""
    log: list[tuple[str, tuple[int, ...]]] = []

    def clobbering(fn: Any) -> Any:
        def kernel(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
            y = fn(x)
            log.append((ctx.node.name, ctx.donated))
            if ctx.reusable(0):
                x[...] = np.nan
            return y

        return kernel

    monkeypatch.setitem(runtime_mod.KERNELS, "Neg", clobbering(np.negative))
    monkeypatch.setitem(runtime_mod.KERNELS, "Abs", clobbering(np.abs))
    return log


def _input(name: str = "x", shape: tuple[int, ...] = (2, 3)) -> Value:
    return Value(name, F32, shape)


def _feed(shape: tuple[int, ...] = (2, 3)) -> np.ndarray:
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape) - 2


def _node(g: Graph, op: str, inputs: list[Value | None], name: str, **attrs: Any) -> Value:
    return g.append(Node(op, inputs, 1, attrs, name=name)).outputs[0]


def test_dead_intermediate_is_donated(donations):
    g = Graph()
    x = _input()
    g.inputs = [x]
    a = _node(g, "Relu", [x], "relu")
    b = _node(g, "Neg", [a], "neg")
    g.outputs = [b]
    x_in = _feed()
    (y,) = Runtime(g).run({"x": x_in}).values()
    np.testing.assert_array_equal(y, -np.maximum(_feed(), 0))
    assert donations == [("neg", (0,))]
    np.testing.assert_array_equal(x_in, _feed())


def test_graph_inputs_and_their_aliases_are_never_donated(donations):
    g = Graph()
    x = _input()
    g.inputs = [x]
    a = _node(g, "Identity", [x], "ident")  # same array object as the feed
    b = _node(g, "Neg", [a], "neg")
    c = _node(g, "Neg", [x], "neg_x")
    g.outputs = [b, c]
    x_in = _feed()
    out = Runtime(g).run({"x": x_in})
    np.testing.assert_array_equal(x_in, _feed())
    np.testing.assert_array_equal(out[b.name], -_feed())
    np.testing.assert_array_equal(out[c.name], -_feed())
    assert all(d == () for _, d in donations)


def test_value_read_later_is_not_donated(donations):
    g = Graph()
    x = _input()
    g.inputs = [x]
    a = _node(g, "Relu", [x], "relu")
    b = _node(g, "Neg", [a], "first")
    c = _node(g, "Abs", [a], "last")
    g.outputs = [b, c]
    out = Runtime(g).run({"x": _feed()})
    np.testing.assert_array_equal(out[b.name], -np.maximum(_feed(), 0))
    np.testing.assert_array_equal(out[c.name], np.maximum(_feed(), 0))
    assert donations == [("first", ()), ("last", (0,))]


def test_graph_output_is_not_donated(donations):
    g = Graph()
    x = _input()
    g.inputs = [x]
    a = _node(g, "Relu", [x], "relu")
    b = _node(g, "Neg", [a], "neg")
    g.outputs = [a, b]
    out = Runtime(g).run({"x": _feed()})
    np.testing.assert_array_equal(out[a.name], np.maximum(_feed(), 0))
    assert donations == [("neg", ())]


def test_views_of_live_values_are_not_donated(donations):
    """r = Reshape(a) is a view of a; a is still read after r's last use."""
    g = Graph()
    x = _input()
    g.inputs = [x]
    a = _node(g, "Relu", [x], "relu")
    shape = Value("shape", const=np.array([3, 2], np.int64))
    r = _node(g, "Reshape", [a, shape], "reshape")
    b = _node(g, "Neg", [r], "neg_view")
    c = _node(g, "Abs", [a], "abs_base")
    g.outputs = [b, c]
    out = Runtime(g).run({"x": _feed()})
    np.testing.assert_array_equal(out[b.name], -np.maximum(_feed(), 0).reshape(3, 2))
    np.testing.assert_array_equal(out[c.name], np.maximum(_feed(), 0))
    assert donations == [("neg_view", ()), ("abs_base", (0,))]


def test_view_of_a_dead_value_is_donated(donations):
    g = Graph()
    x = _input()
    g.inputs = [x]
    a = _node(g, "Relu", [x], "relu")
    shape = Value("shape", const=np.array([3, 2], np.int64))
    r = _node(g, "Reshape", [a, shape], "reshape")
    b = _node(g, "Neg", [r], "neg_view")
    g.outputs = [b]
    (y,) = Runtime(g).run({"x": _feed()}).values()
    np.testing.assert_array_equal(y, -np.maximum(_feed(), 0).reshape(3, 2))
    assert donations == [("neg_view", (0,))]


def test_identity_alias_still_live_is_not_donated(donations):
    g = Graph()
    x = _input()
    g.inputs = [x]
    a = _node(g, "Relu", [x], "relu")
    b = _node(g, "Identity", [a], "ident")
    c = _node(g, "Neg", [a], "neg")  # last read of a, but b is the same array
    d = _node(g, "Abs", [b], "abs")
    g.outputs = [c, d]
    out = Runtime(g).run({"x": _feed()})
    np.testing.assert_array_equal(out[d.name], np.maximum(_feed(), 0))
    assert donations == [("neg", ()), ("abs", (0,))]


def test_constants_are_never_donated(donations):
    g = Graph()
    x = _input()
    g.inputs = [x]
    k = Value("k", const=np.full((2, 3), 5.0, np.float32))
    a = _node(g, "Neg", [k], "neg_const")
    b = _node(g, "Add", [a, x], "add")
    g.outputs = [b]
    rt = Runtime(g)
    for _ in range(2):
        (y,) = rt.run({"x": _feed()}).values()
        np.testing.assert_array_equal(y, _feed() - 5)
    np.testing.assert_array_equal(k.const, 5.0)
    assert all(d == () for _, d in donations)


def test_outer_values_read_by_a_body_are_not_donated(donations):
    """The If branch negates outer ``a``; ``a`` is read again after the If."""
    g = Graph()
    c = Value("c", DataType.BOOL, ())
    x = _input()
    g.inputs = [c, x]
    a = _node(g, "Relu", [x], "relu")
    then = Graph(name="then")
    t = _node(then, "Neg", [a], "neg_outer")
    then.outputs = [t]
    els = Graph(name="else")
    e = _node(els, "Abs", [a], "abs_outer")
    els.outputs = [e]
    y = _node(g, "If", [c], "if", then_branch=then, else_branch=els)
    z = _node(g, "Abs", [a], "abs_after")
    g.outputs = [y, z]
    rt = Runtime(g)
    for flag in (True, False):
        out = rt.run({"c": np.array(flag), "x": _feed()})
        relu = np.maximum(_feed(), 0)
        np.testing.assert_array_equal(out[y.name], -relu if flag else relu)
        np.testing.assert_array_equal(out[z.name], relu)
    assert [d for n, d in donations if n.endswith("outer")] == [(), ()]


def test_body_intermediates_are_donated_inside_the_body(donations):
    g = Graph()
    c = Value("c", DataType.BOOL, ())
    x = _input()
    g.inputs = [c, x]
    then = Graph(name="then")
    r = _node(then, "Relu", [x], "relu_in")
    t = _node(then, "Neg", [r], "neg_in")
    then.outputs = [t]
    els = Graph(name="else")
    e = _node(els, "Identity", [x], "ident")
    els.outputs = [e]
    y = _node(g, "If", [c], "if", then_branch=then, else_branch=els)
    g.outputs = [y]
    (out,) = Runtime(g).run({"c": np.array(True), "x": _feed()}).values()
    np.testing.assert_array_equal(out, -np.maximum(_feed(), 0))
    assert donations == [("neg_in", (0,))]


def test_nested_body_reads_a_value_of_the_middle_graph():
    """A branch inside a Loop body reads a value defined by the body, not the main graph."""
    g = Graph()
    trip = Value("M", DataType.INT64, ())
    c = Value("c", DataType.BOOL, ())
    h0 = _input("h0", (2,))
    g.inputs = [trip, c, h0]
    body = Graph(name="body")
    i, cin, h = Value("i", DataType.INT64, ()), Value("cond", DataType.BOOL, ()), _input("h", (2,))
    body.inputs = [i, cin, h]
    one = Value("one", const=np.ones(2, np.float32))
    inc = _node(body, "Add", [h, one], "inc")
    then = Graph(name="then")
    then.outputs = [_node(then, "Neg", [inc], "neg")]
    els = Graph(name="else")
    els.outputs = [_node(els, "Identity", [inc], "same")]
    branch = _node(body, "If", [c], "if", then_branch=then, else_branch=els)
    keep = _node(body, "Identity", [cin], "keep")
    body.outputs = [keep, branch]
    loop = g.append(Node("Loop", [trip, None, h0], 1, {"body": body}, name="loop"))
    g.outputs = list(loop.outputs)
    rt = Runtime(g)
    feeds = {"M": np.array(3, np.int64), "h0": np.array([1.0, 2.0], np.float32)}
    (y,) = rt.run({**feeds, "c": np.array(False)}).values()
    np.testing.assert_array_equal(y, [4.0, 5.0])
    (y,) = rt.run({**feeds, "c": np.array(True)}).values()
    np.testing.assert_array_equal(y, [-2.0, -3.0])  # h -> -(h + 1), three times


def test_values_are_freed_after_their_last_read():
    g = Graph()
    x = _input()
    g.inputs = [x]
    a = _node(g, "Relu", [x], "relu")
    b = _node(g, "Neg", [a], "neg")
    g.outputs = [b]
    rt = Runtime(g)
    plan = rt._plan(g)
    slots = plan.slot
    assert slots[id(a)] in plan.steps[1].free
    assert slots[id(x)] in plan.steps[0].free
    assert slots[id(b)] not in {s for st in plan.steps for s in st.free}


def test_profile_sums_seconds_per_op():
    g = Graph()
    x = _input()
    g.inputs = [x]
    a = _node(g, "Relu", [x], "relu")
    b = _node(g, "Neg", [a], "neg")
    g.outputs = [b]
    rt = Runtime(g, profile=True)
    rt.run({"x": _feed()})
    rt.run({"x": _feed()})
    assert rt.profile is not None
    assert set(rt.profile) == {"Relu", "Neg"}
    assert all(n == 2 and t >= 0.0 for t, n in rt.profile.values())
    assert "Relu" in rt.profile_table()
    assert Runtime(g).profile is None


def test_unknown_outer_value_is_an_execution_error():
    g = Graph()
    x = _input()
    stray = _input("stray")
    g.inputs = [x]
    g.outputs = [_node(g, "Add", [x, stray], "add")]
    with pytest.raises(ExecutionError, match="outer value"):
        Runtime(g).run({"x": _feed()})


def test_observe_sees_inputs_and_every_node_output_once(donations):
    g = Graph()
    x = _input()
    g.inputs = [x]
    a = _node(g, "Relu", [x], "relu")
    b = _node(g, "Neg", [a], "neg")
    _node(g, "Abs", [a], "unused")  # read by nobody: freed at once, still observed
    g.outputs = [b]
    seen: list[tuple[str, np.ndarray]] = []
    rt = Runtime(g, observe=lambda v, arr: seen.append((v.name, arr.copy())))
    (y,) = rt.run({"x": _feed()}).values()
    assert [name for name, _ in seen] == ["x", a.name, b.name, g.nodes[2].outputs[0].name]
    np.testing.assert_array_equal(seen[1][1], np.maximum(_feed(), 0))
    np.testing.assert_array_equal(seen[2][1], y)
    assert ("unused", (0,)) in donations  # observing does not block donation


def test_observe_skips_body_values():
    then_g, else_g = Graph(name="then"), Graph(name="else")
    for body, op in ((then_g, "Relu"), (else_g, "Neg")):
        bx = _input("bx")
        body.outputs = [_node(body, op, [bx], f"{op}_b")]
        body.inputs = []
    g = Graph()
    x, c = _input(), Value("c", DataType.BOOL, ())
    g.inputs = [x, c]
    # bodies read the outer x directly
    then_g.nodes[0].set_input(0, x)
    else_g.nodes[0].set_input(0, x)
    g.outputs = [_node(g, "If", [c], "if", then_branch=then_g, else_branch=else_g)]
    names: list[str] = []
    Runtime(g, observe=lambda v, arr: names.append(v.name)).run(
        {"x": _feed(), "c": np.array(True)}
    )
    assert names == ["x", "c", g.outputs[0].name]
