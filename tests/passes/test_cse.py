"""EliminateCommonSubexpressions: duplicate nodes and equal constants merge."""

from __future__ import annotations

import numpy as np
from pass_testing import Builder, check_pass

from ir import DataType
from passes.cse import EliminateCommonSubexpressions, array_key


def test_merges_duplicate_nodes_and_chains() -> None:
    b = Builder()
    x = b.input("x", (2, 3))
    a1, a2 = b.op("Relu", x), b.op("Relu", x)
    s1, s2 = b.op("Sigmoid", a1), b.op("Sigmoid", a2)
    g = b.outputs(b.op("Add", s1, s2))
    check_pass(g, EliminateCommonSubexpressions(), modified=True, ops=["Relu", "Sigmoid", "Add"])
    add = g.nodes[-1]
    assert add.inputs[0] is add.inputs[1] is s1


def test_attributes_distinguish_and_defaults_apply() -> None:
    b = Builder()
    x = b.input("x", (2, 3))
    l1 = b.op("LeakyRelu", x, alpha=0.1)
    l2 = b.op("LeakyRelu", x, alpha=0.2)
    l3 = b.op("LeakyRelu", x)
    l4 = b.op("LeakyRelu", x, alpha=0.01)  # the default, spelled out
    g = b.outputs(b.op("Sum", l1, l2, l3, l4))
    check_pass(g, EliminateCommonSubexpressions(), modified=True, ops=["LeakyRelu"] * 3 + ["Sum"])


def test_list_attributes_compare_by_content() -> None:
    b = Builder()
    x = b.input("x", (2, 3, 4))
    t1 = b.op("Transpose", x, perm=[2, 0, 1])
    t2 = b.op("Transpose", x, perm=(2, 0, 1))
    t3 = b.op("Transpose", x, perm=[1, 0, 2])
    g = b.outputs(t1, t2, b.op("Transpose", t3, perm=[1, 0, 2]))
    # t1 and t2 are both graph outputs: they stay two values
    check_pass(g, EliminateCommonSubexpressions(), modified=False, ops=["Transpose"] * 4)
    b = Builder()
    x = b.input("x", (2, 3, 4))
    t1 = b.op("Transpose", x, perm=[2, 0, 1])
    t2 = b.op("Transpose", x, perm=(2, 0, 1))
    g = b.outputs(b.op("Add", t1, t2))
    check_pass(g, EliminateCommonSubexpressions(), modified=True, ops=["Transpose", "Add"])


def test_commutative_inputs_in_any_order() -> None:
    b = Builder()
    x, y = b.input("x", (3,)), b.input("y", (3,))
    g = b.outputs(
        b.op("Sub", b.op("Mul", x, y), b.op("Mul", y, x)),
        b.op("Sub", b.op("Div", x, y), b.op("Div", y, x)),
    )
    check_pass(
        g, EliminateCommonSubexpressions(), modified=True, ops=["Mul", "Sub", "Div", "Div", "Sub"]
    )


def test_later_graph_output_keeps_its_name() -> None:
    b = Builder()
    x = b.input("x", (3,))
    inner = b.op("Relu", x)
    out = b.op("Relu", x)
    out.name = "y"
    g = b.outputs(b.op("Neg", inner), out)
    check_pass(g, EliminateCommonSubexpressions(), modified=True, ops=["Relu", "Neg"])
    assert g.outputs[1] is inner and inner.name == "y"


def test_dedupes_equal_constants_and_then_nodes() -> None:
    b = Builder()
    x = b.input("x", (64, 64))
    big = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    c1, c2 = b.const(big), b.const(big.copy())
    c3 = b.const(big.astype(np.float16).astype(np.float32) + 1)
    y1, y2, y3 = b.op("Add", x, c1), b.op("Add", x, c2), b.op("Add", x, c3)
    g = b.outputs(b.op("Sum", y1, y2, y3))
    check_pass(g, EliminateCommonSubexpressions(), modified=True, ops=["Add", "Add", "Sum"])
    assert not c2.uses and c3.uses


def test_constants_differing_in_dtype_or_shape_stay_apart() -> None:
    assert array_key(np.zeros(2, np.float32)) != array_key(np.zeros(2, np.int32))
    assert array_key(np.zeros((2, 1), np.float32)) != array_key(np.zeros((1, 2), np.float32))
    assert array_key(np.array([0.0], np.float32)) != array_key(np.array([-0.0], np.float32))
    big = np.arange(1000, dtype=np.float32)
    assert array_key(big) == array_key(big.copy()) != array_key(big[::-1])
    assert array_key(np.array(["a", "b"])) == array_key(np.array(["a", "b"]))


def test_graph_output_constant_is_the_one_kept() -> None:
    b = Builder()
    x = b.input("x", (2,))
    c1, c2 = b.const(np.ones(2, np.float32)), b.const(np.ones(2, np.float32))
    g = b.outputs(b.op("Add", x, c1), c2)
    check_pass(g, EliminateCommonSubexpressions(), modified=True, ops=["Add"])
    assert g.nodes[0].inputs[1] is c2 and not c1.uses


def test_two_graph_output_constants_stay() -> None:
    b = Builder()
    x = b.input("x", (2,))
    c1, c2 = b.const(np.ones(2, np.float32)), b.const(np.ones(2, np.float32))
    g = b.outputs(b.op("Add", x, c1), c1, c2)
    check_pass(g, EliminateCommonSubexpressions(), modified=False, ops=["Add"])
    assert g.outputs[1] is c1 and g.outputs[2] is c2


def test_not_merged_across_body_boundary() -> None:
    b = Builder()
    x = b.input("x", (3,))
    cond = b.input("cond", (), DataType.BOOL)
    outer = b.op("Relu", x)
    then_b, else_b = Builder("then"), Builder("else")
    then_b.outputs(then_b.op("Add", then_b.op("Relu", x), then_b.op("Relu", x)))
    else_b.outputs(else_b.op("Neg", x))
    y = b.op("If", cond, then_branch=then_b.graph, else_branch=else_b.graph)
    g = b.outputs(b.op("Add", outer, y))
    feeds = {"x": np.array([-1, 0, 2], np.float32), "cond": np.array(True)}
    check_pass(
        g,
        EliminateCommonSubexpressions(),
        modified=True,
        ops=["Relu", "If", "Relu", "Add", "Neg", "Add"],
        feeds=feeds,
    )


def test_training_dropouts_are_random_and_not_merged() -> None:
    b = Builder()
    x = b.input("x", (4,))
    ratio, train = b.const(np.array(0.5, np.float32)), b.const(np.array(True))
    d1, d2 = b.op("Dropout", x, ratio, train), b.op("Dropout", x, ratio, train)
    i1, i2 = b.op("Dropout", x), b.op("Dropout", x)  # inference: deterministic, merged
    g = b.outputs(b.op("Sum", d1, d2, i1, i2))
    assert EliminateCommonSubexpressions()(g).modified
    assert [n.op for n in g.nodes].count("Dropout") == 3


def test_scalar_and_one_element_constants_stay_distinct():
    """Test: a 0-d constant and a [1] constant with equal bytes are not merged (shape differs)."""
    import numpy as np

    from ir import DataType, Graph, Node, Value
    from passes.cse import EliminateCommonSubexpressions

    g = Graph()
    x = Value("x", DataType.FLOAT, (2, 3))
    g.inputs = [x]
    scalar = Value("idx", const=np.array(1, np.int64))
    vector = Value("idx1", const=np.array([1], np.int64))
    a = g.append(Node("Gather", [x, scalar], attrs={"axis": 1}, name="a"))
    b = g.append(Node("Gather", [x, vector], attrs={"axis": 1}, name="b"))
    g.outputs = [a.outputs[0], b.outputs[0]]
    EliminateCommonSubexpressions()(g)
    assert a.inputs[1] is scalar and b.inputs[1] is vector
