"""LSTM/GRU + Transpose([0, 2, 1, 3]) + Reshape -> LSTMMerged/GRUMerged (passes/fusions/rnn.py)."""

from __future__ import annotations

import numpy as np
import pytest
from pass_testing import Builder, check_pass, infer_node, op_types

from ir import Graph, Node, Value
from passes.fusions import Fusions
from passes.fusions.rnn import rules

rng = np.random.default_rng(0)
EXACT = {"rtol": 0.0, "atol": 0.0}
S, B, E, H = 5, 3, 4, 6


def _f32(*shape: int) -> np.ndarray:
    return (0.4 * rng.standard_normal(shape)).astype(np.float32)


def _rnn(b: Builder, x: Value, op: str, dirs: int, layout: int = 0, **attrs) -> tuple:
    gates = 4 if op == "LSTM" else 3
    w, r = b.const(_f32(dirs, gates * H, E)), b.const(_f32(dirs, gates * H, H))
    bias = b.const(_f32(dirs, 2 * gates * H))
    direction = "bidirectional" if dirs == 2 else "forward"
    outs = 3 if op == "LSTM" else 2
    return b.op(op, x, w, r, bias, outputs=outs, hidden_size=H, direction=direction,
                layout=layout, **attrs)  # fmt: skip


def _merged(b: Builder, y: Value, dirs: int, target: list[int], layout: int = 0) -> Value:
    if layout == 0:
        y = b.op("Transpose", y, perm=[0, 2, 1, 3])
    return b.op("Reshape", y, b.const(np.asarray(target, np.int64)))


@pytest.mark.parametrize(
    ("op", "dirs", "layout", "target"),
    [
        ("LSTM", 2, 0, [0, 0, 2 * H]),
        ("LSTM", 2, 0, [S, B, -1]),
        ("LSTM", 1, 0, [0, 0, -1]),
        ("GRU", 2, 0, [0, 0, 2 * H]),
        ("LSTM", 2, 1, [0, 0, 2 * H]),
        ("GRU", 1, 1, [B, S, H]),
    ],
)
def test_merges_directions_exactly(op: str, dirs: int, layout: int, target: list[int]) -> None:
    b = Builder()
    x = b.input("x", (B, S, E) if layout else (S, B, E))
    y, *states = _rnn(b, x, op, dirs, layout)
    out = _merged(b, y, dirs, target, layout)
    g = b.outputs(out, *states)  # Y_h (and Y_c) are graph outputs: taken over
    check_pass(g, Fusions(), modified=True, ops=[f"{op}Merged"], **EXACT)
    (node,) = g.nodes
    lead = (B, S) if layout else (S, B)
    assert node.outputs[0].shape == (*lead, dirs * H)
    assert [v.name for v in node.outputs] == [out.name, *(s.name for s in states)]
    assert node.attrs["direction"] == ("bidirectional" if dirs == 2 else "forward")


def test_state_read_before_the_reshape_keeps_topological_order() -> None:
    b = Builder()
    x = b.input("x", ("seq", "batch", E))
    y, y_h, _ = _rnn(b, x, "LSTM", 2)
    h = b.op("Relu", y_h)  # placed between the LSTM and the Reshape
    out = _merged(b, y, 2, [0, 0, 2 * H])
    g = b.outputs(out, h)
    check_pass(g, Fusions(), modified=True, ops=["LSTMMerged", "Relu"], **EXACT)
    assert [n.op for n in g.nodes] == ["LSTMMerged", "Relu"]
    assert g.nodes[0].outputs[0].shape == ("seq", "batch", 2 * H)


def _refused(g: Graph, reason: str) -> None:
    ops = op_types(g)
    p = Fusions()
    check_pass(g, p, modified=False, ops=ops, **EXACT)
    reasons = [why for whys in p.rejections.values() for _, why in whys]
    assert any(reason in why for why in reasons), reasons


def test_refused_when_y_is_read_elsewhere() -> None:
    b = Builder()
    x = b.input("x", (S, B, E))
    y, _, _ = _rnn(b, x, "LSTM", 2)
    g = b.outputs(_merged(b, y, 2, [0, 0, 2 * H]), b.op("Relu", y))
    _refused(g, "is read elsewhere")


def test_refused_for_another_perm_or_target() -> None:
    b = Builder()
    x = b.input("x", (S, B, E))
    y, _, _ = _rnn(b, x, "LSTM", 2)
    t = b.op("Transpose", y, perm=[2, 0, 1, 3])  # [B, S, 2, H]: not the exporter pattern
    g = b.outputs(b.op("Reshape", t, b.const(np.asarray([0, 0, 2 * H], np.int64))))
    _refused(g, "perm")
    b = Builder()
    x = b.input("x", (S, "batch", E))
    y, _, _ = _rnn(b, x, "LSTM", 2)
    g = b.outputs(_merged(b, y, 2, [0, -1, 2 * H]))  # -1 is not provably the batch
    _refused(g, "does not keep dims")


def test_merged_op_shape_inference_and_kernel_outputs() -> None:
    x, w, r = Value("x", shape=("s", "b", E)), Value("w", const=_f32(2, 3 * H, E)), Value(
        "r", const=_f32(2, 3 * H, H))  # fmt: skip
    x.dtype = w.dtype
    node = Node("GRUMerged", [x, w, r], 2, attrs={"hidden_size": H, "direction": "bidirectional"})
    infer_node(node)
    assert node.outputs[0].shape == ("s", "b", 2 * H)
    assert node.outputs[1].shape == (2, "b", H)


def test_rule_names() -> None:
    assert {r.name for r in rules} == {"LSTM+MergeDirections", "GRU+MergeDirections"}
    assert all(r.takes_over == ("rnn",) for r in rules)
