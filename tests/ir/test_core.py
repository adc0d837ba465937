"""IR core: use-lists, mutation API, topological order, verifier."""

from __future__ import annotations

import numpy as np
import pytest

from ir import DataType, Graph, IRError, Node, Value
from ir.verify import check_graph


def _chain() -> tuple[Graph, Value, Node, Node]:
    g = Graph()
    x = Value("x", DataType.FLOAT, (2, 3))
    g.inputs = [x]
    a = g.append(Node("Relu", [x], name="a"))
    b = g.append(Node("Sigmoid", [a.outputs[0]], name="b"))
    g.outputs = [b.outputs[0]]
    return g, x, a, b


def test_use_lists_follow_set_input():
    """Test: set_input moves the use from the old value to the new one."""
    g, x, a, b = _chain()
    assert x.uses == ((a, 0),)
    b.set_input(0, x)
    assert a.outputs[0].uses == ()
    assert set(x.uses) == {(a, 0), (b, 0)}


def test_replace_all_uses_with_updates_graph_outputs():
    """Test: y = Sigmoid(Relu(x)); replacing Relu's output rewires readers only when asked."""
    g, x, a, b = _chain()
    b.outputs[0].replace_all_uses_with(a.outputs[0], graph=g)
    assert g.outputs == [a.outputs[0]]
    g.remove(b)
    assert [n.op for n in g] == ["Relu"]
    check_graph(g)


def test_remove_refuses_used_node_atomically():
    """Test: removing a node whose output is read elsewhere fails and changes nothing."""
    g, _, a, b = _chain()
    with pytest.raises(IRError, match="read by"):
        g.remove(a)
    assert len(g) == 2 and a.graph is g
    with pytest.raises(IRError, match="graph output"):
        g.remove(b)


def test_insert_before_keeps_order_and_sort_repairs():
    """Test: nodes appended out of order are put back in topological order by sort()."""
    g = Graph()
    x = Value("x", DataType.FLOAT, (4,))
    g.inputs = [x]
    first = Node("Relu", [x], name="first")
    second = Node("Tanh", [first.outputs[0]], name="second")
    g.append(second)
    g.insert_before(second, first)
    g.outputs = [second.outputs[0]]
    check_graph(g)
    g._nodes.reverse()  # break the order behind the API's back
    with pytest.raises(IRError, match="before it is produced"):
        check_graph(g)
    g.sort()
    check_graph(g)
    assert [n.name for n in g] == ["first", "second"]


def test_constants_carry_dtype_and_shape():
    c = Value("c", const=np.zeros((2, 5), np.float16))
    assert c.is_const and c.dtype == DataType.FLOAT16 and c.shape == (2, 5)


def test_verifier_rejects_unknown_op_and_bad_attribute():
    g = Graph()
    x = Value("x", DataType.FLOAT, (1,))
    g.inputs = [x]
    g.append(Node("NoSuchOp", [x], name="n"))
    with pytest.raises(IRError, match="not in the IR vocabulary"):
        check_graph(g)
    g2 = Graph()
    g2.inputs = [x2 := Value("x", DataType.FLOAT, (1,))]
    g2.append(Node("LeakyRelu", [x2], attrs={"alpha": "big"}, name="n"))
    with pytest.raises(IRError, match="alpha"):
        check_graph(g2)


def test_attr_falls_back_to_declared_default():
    n = Node("LeakyRelu", [Value("x", DataType.FLOAT, (1,))])
    assert n.attr("alpha") == pytest.approx(0.01)
    n.attrs["alpha"] = 0.2
    assert n.attr("alpha") == 0.2


def test_unique_name_never_collides():
    g, *_ = _chain()
    names = {g.unique_name("x") for _ in range(5)}
    assert len(names) == 5 and "x" not in names


def test_dtype_round_trip_with_numpy():
    for dt in (DataType.FLOAT, DataType.BFLOAT16, DataType.INT4, DataType.BOOL):
        assert DataType.from_numpy(dt.numpy) == dt
