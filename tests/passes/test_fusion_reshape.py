"""Shape-only chains -> one Reshape; Slice/Concat round trips; Shape folding when pinned."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from pass_testing import Builder, check_pass, op_types, random_feeds

import converter
from benchmarks import models as M
from ir import Graph, Value
from passes.base import Pass
from passes.dce import RemoveDeadNodes
from passes.fusions import RulePass, reshape
from passes.noop import RemoveNoOps

rng = np.random.default_rng(5)


def _ints(*v: int) -> np.ndarray:
    return np.array(v, np.int64)


class _Fuse(Pass):
    """The reshape rules, then no-op and dead-node removal (as the pipeline's cleanup)."""

    name = "ReshapeRules"

    def run(self, graph: Graph) -> bool:
        changed = RulePass(reshape.rules).run(graph)
        if changed:
            RemoveNoOps().run(graph)
            RemoveDeadNodes().run(graph)
        return changed


def _chain(b: Builder, x: Value, kinds: list[str]) -> Value:
    for kind in kinds:
        if kind == "flatten":
            x = b.op("Flatten", x, axis=1)
        elif kind == "unsqueeze":
            x = b.op("Unsqueeze", x, b.const(_ints(0)))
        elif kind == "squeeze":
            x = b.op("Squeeze", x, b.const(_ints(0)))
        else:
            x = b.op("Reshape", x, b.const(_ints(*kind)))
    return x


@pytest.mark.parametrize(
    "shape,kinds,target",
    [
        ((2, 3, 4), [(6, 4), (4, 6)], [4, 6]),
        ((2, 3, 4), ["flatten", "unsqueeze"], [1, 2, 12]),
        ((1, 3, 4), ["squeeze", (12,), "unsqueeze", (3, 2, 2)], [3, 2, 2]),
        (("n", 3, 4), ["flatten", (-1, 2, 6)], [0, 2, 6]),
        ((2, "s", 4), [(0, 0, 2, 2), (2, -1, 2)], [2, -1, 2]),
    ],
    ids=str,
)
def test_chain_collapses(shape: tuple, kinds: list, target: list) -> None:
    b = Builder()
    g = b.outputs(_chain(b, b.input("x", shape), kinds))
    feeds = random_feeds(g, sizes={"n": 3, "s": 5})
    check_pass(g, _Fuse(), modified=True, ops=["Reshape"], feeds=feeds)
    assert g.nodes[0].input(1).const.tolist() == target


def test_chain_back_to_the_input_shape_disappears() -> None:
    b = Builder()
    x = b.input("x", (2, 3, 4))
    y = b.op("Relu", _chain(b, x, [(6, 4), (2, 3, 4)]))
    check_pass(b.outputs(y), _Fuse(), modified=True, ops=["Relu"])


def _refused(g: Graph) -> None:
    check_pass(g, RulePass(reshape.rules), modified=False, ops=op_types(g))


def test_chain_refusals() -> None:
    b = Builder()  # the intermediate is read elsewhere
    x = b.input("x", (2, 3, 4))
    mid = b.op("Reshape", x, b.const(_ints(6, 4)))
    _refused(b.outputs(b.op("Reshape", mid, b.const(_ints(4, 6))), b.op("Relu", mid)))
    b = Builder()  # the intermediate is a graph output
    x = b.input("x", (2, 3, 4))
    mid = b.op("Flatten", x)
    _refused(b.outputs(b.op("Unsqueeze", mid, b.const(_ints(0))), mid))
    b = Builder()  # two dims not pinned by the input's
    x = b.input("x", ("a", "b", 4))
    y = b.op("Reshape", b.op("Reshape", x, b.const(_ints(-1, 4))), b.const(_ints(0, 2, -1)))
    assert y.shape == (None, 2, None)
    _refused(b.outputs(y))


def _concat(b: Builder, parts: list[Value], axis: int) -> Value:
    return b.op("Concat", *parts, axis=axis)


@pytest.mark.parametrize("pick", [0, 1, 2])
def test_slice_of_concat_picks_an_input(pick: int) -> None:
    b = Builder()
    xs = [b.input(f"x{i}", (2, n)) for i, n in enumerate((3, 4, 5))]
    starts, ends = [(0, 3), (3, 7), (-5, 2**62)][pick]
    cat = _concat(b, xs, 1)
    y = b.op("Slice", cat, b.const(_ints(starts)), b.const(_ints(ends)), b.const(_ints(-1)))
    g = b.outputs(b.op("Relu", y))
    check_pass(g, _Fuse(), modified=True, ops=["Relu"])
    assert g.nodes[0].input(0) is xs[pick]


def test_slice_of_concat_refusals() -> None:
    b = Builder()  # a part of one input only
    xs = [b.input(f"x{i}", (2, 3)) for i in range(2)]
    y = b.op("Slice", _concat(b, xs, 1), b.const(_ints(0)), b.const(_ints(2)), b.const(_ints(1)))
    _refused(b.outputs(y))
    b = Builder()  # step 2
    xs = [b.input(f"x{i}", (2, 3)) for i in range(2)]
    y = b.op("Slice", _concat(b, xs, 1), b.const(_ints(0)), b.const(_ints(3)),
             b.const(_ints(1)), b.const(_ints(2)))  # fmt: skip
    _refused(b.outputs(y))
    b = Builder()  # along another axis than the concat's
    xs = [b.input(f"x{i}", (2, 3)) for i in range(2)]
    y = b.op("Slice", _concat(b, xs, 1), b.const(_ints(0)), b.const(_ints(1)), b.const(_ints(0)))
    _refused(b.outputs(y))


def test_concat_of_slices_and_of_split_is_the_input() -> None:
    b = Builder()
    x = b.input("x", (2, 9))
    parts = [b.op("Slice", x, b.const(_ints(s)), b.const(_ints(e)), b.const(_ints(1)))
             for s, e in ((0, 2), (2, 7), (7, 100))]  # fmt: skip
    y = b.op("Relu", _concat(b, parts, -1))
    s0, s1, s2 = b.op("Split", x, axis=1, num_outputs=3, outputs=3)
    z = b.op("Relu", _concat(b, [s0, s1, s2], 1))
    check_pass(b.outputs(y, z), _Fuse(), modified=True, ops=["Relu", "Relu"])


def test_concat_of_slices_refusals() -> None:
    b = Builder()  # out of order
    x = b.input("x", (2, 9))
    parts = [b.op("Slice", x, b.const(_ints(s)), b.const(_ints(e)), b.const(_ints(1)))
             for s, e in ((2, 9), (0, 2))]  # fmt: skip
    _refused(b.outputs(_concat(b, parts, 1)))
    b = Builder()  # a gap
    x = b.input("x", (2, 9))
    parts = [b.op("Slice", x, b.const(_ints(s)), b.const(_ints(e)), b.const(_ints(1)))
             for s, e in ((0, 2), (3, 9))]  # fmt: skip
    _refused(b.outputs(_concat(b, parts, 1)))
    b = Builder()  # Split outputs in another order
    x = b.input("x", (2, 8))
    s0, s1 = b.op("Split", x, axis=1, num_outputs=2, outputs=2)
    _refused(b.outputs(_concat(b, [s1, s0], 1)))


def test_bert_with_pinned_shapes_folds_every_shape_subgraph(tmp_path: Path) -> None:
    src = tmp_path / "bert.onnx"
    onnx.save(M.bert_encoder(M.BertConfig.tiny()), src)
    result = converter.convert(src, output=tmp_path / "b.ms", verify=True,
                               input_shapes="input_ids:2,8;attention_mask:2,8")  # fmt: skip
    assert result.verify is not None and result.verify.passed
    ops = result.graph.count_ops()
    for gone in ("Shape", "Concat", "Range", "Reshape", "Transpose", "Squeeze"):
        assert gone not in ops
    assert ops["Gather"] == 1  # the word embedding lookup


def test_concat_of_pieces_of_a_scalar_source_is_left_alone():
    """Test: Concat of Unsqueeze-free pieces whose common source is 0-d doesn't crash the rule."""
    import numpy as np

    from ir import DataType, Graph, Node, Value
    from passes.fusions import Fusions

    g = Graph()
    x = Value("x", DataType.INT64, ())
    g.inputs = [x]
    axes = Value("axes", const=np.array([0], np.int64))
    a = g.append(Node("Unsqueeze", [x, axes], name="a"))
    b = g.append(Node("Unsqueeze", [x, axes], name="b"))
    cat = g.append(Node("Concat", [a.outputs[0], b.outputs[0]], attrs={"axis": 0}, name="cat"))
    g.outputs = [cat.outputs[0]]
    Fusions()(g)  # must not raise
    assert any(n.op == "Concat" for n in g)
