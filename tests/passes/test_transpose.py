"""Transpose cleanup passes: one test group per rule, executor numerics before/after."""

from __future__ import annotations

import numpy as np
import pytest
from pass_testing import I64, Builder, check_pass, op_types

from ir import Graph, Node
from passes.base import Pass
from passes.layout import transpose_cleanup
from passes.manager import PassManager
from passes.transpose import (
    ComposeTransposes,
    FoldConstantTransposes,
    MergeTransposes,
    PushTransposes,
    TransposeToReshape,
    compose,
    inverse,
    nchw_to_nhwc,
    nhwc_to_nchw,
)

TO_NHWC, TO_NCHW = nchw_to_nhwc(4), nhwc_to_nchw(4)
RTOL = 1e-5


class Cleanup(Pass):
    """The whole transpose cleanup fixed point, as one pass (for end states)."""

    name = "Cleanup"

    def __init__(self, layout: str | None = None) -> None:
        super().__init__()
        self.layout = layout

    def run(self, graph: Graph) -> bool:
        pm = PassManager([transpose_cleanup(layout=self.layout)])
        pm.run(graph)
        return any(r.modified and r.name != "InferShapes" for r in pm.records)


def nodes(graph: Graph, op: str) -> list[Node]:
    return [n for n in graph.nodes if n.op == op]


def rng_const(b: Builder, shape: tuple[int, ...], seed: int = 1):
    return b.const(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


# -- permutation helpers -------------------------------------------------------------------
def test_perm_helpers() -> None:
    assert TO_NHWC == [0, 2, 3, 1] and TO_NCHW == [0, 3, 1, 2]
    assert inverse(TO_NHWC) == TO_NCHW
    assert compose(TO_NHWC, TO_NCHW) == [0, 1, 2, 3]
    x = np.arange(24).reshape(1, 2, 3, 4)
    p1, p2 = [2, 0, 3, 1], [1, 3, 0, 2]
    assert np.array_equal(x.transpose(p1).transpose(p2), x.transpose(compose(p1, p2)))


# -- compose / cancel ------------------------------------------------------------------------
def test_cancel_pair() -> None:
    b = Builder()
    x = b.input("x", (1, 3, 4, 5))
    y = b.op("Relu", b.op("Transpose", b.op("Transpose", x, perm=TO_NHWC), perm=TO_NCHW))
    g = b.outputs(y)
    check_pass(g, ComposeTransposes(), modified=True, ops=["Relu"], rtol=RTOL)
    assert g.nodes[0].inputs[0] is x


def test_compose_two_into_one() -> None:
    b = Builder()
    x = b.input("x", (2, 3, 4, 5))
    t = b.op("Transpose", b.op("Transpose", x, perm=[1, 0, 2, 3]), perm=[0, 2, 3, 1])
    g = b.outputs(b.op("Relu", t))
    check_pass(g, ComposeTransposes(), modified=True, ops=["Transpose", "Relu"], rtol=RTOL)
    assert nodes(g, "Transpose")[0].attrs["perm"] == compose([1, 0, 2, 3], [0, 2, 3, 1])


def test_compose_default_perm() -> None:
    """perm omitted = reversed axes; twice is the identity."""
    b = Builder()
    x = b.input("x", (2, 3, 4))
    g = b.outputs(b.op("Neg", b.op("Transpose", b.op("Transpose", x))))
    check_pass(g, ComposeTransposes(), modified=True, ops=["Neg"], rtol=RTOL)


def test_cancel_keeps_inner_with_other_consumers() -> None:
    b = Builder()
    x = b.input("x", (1, 3, 4, 5))
    t1 = b.op("Transpose", x, perm=TO_NHWC)
    y = b.op("Relu", b.op("Transpose", t1, perm=TO_NCHW))
    g = b.outputs(y, b.op("Sigmoid", t1))
    check_pass(g, ComposeTransposes(), modified=True, ops=["Transpose", "Relu", "Sigmoid"])


def test_cancel_into_graph_output_renames_producer() -> None:
    b = Builder()
    x = b.input("x", (1, 3, 4, 5))
    r = b.op("Relu", x)
    y = b.op("Transpose", b.op("Transpose", r, perm=TO_NHWC), perm=TO_NCHW)
    y.name = "y"
    g = b.outputs(y)
    check_pass(g, ComposeTransposes(), modified=True, ops=["Relu"])
    assert g.outputs[0].name == "y" and g.outputs[0].producer.op == "Relu"


def test_cancel_input_to_output_becomes_identity() -> None:
    b = Builder()
    x = b.input("x", (1, 3, 4, 5))
    g = b.outputs(b.op("Transpose", b.op("Transpose", x, perm=TO_NHWC), perm=TO_NCHW))
    check_pass(g, ComposeTransposes(), modified=True, ops=["Identity"])


def test_compose_nothing_to_do() -> None:
    b = Builder()
    x = b.input("x", (1, 3, 4, 5))
    g = b.outputs(b.op("Relu", b.op("Transpose", x, perm=TO_NHWC)))
    check_pass(g, ComposeTransposes(), modified=False)


# -- merge ------------------------------------------------------------------------------------
def test_merge_sibling_transposes() -> None:
    b = Builder()
    x = b.input("x", (1, 3, 4, 5))
    r = b.op("Relu", b.op("Transpose", x, perm=TO_NHWC))
    s = b.op("Sigmoid", b.op("Transpose", x, perm=TO_NHWC))
    g = b.outputs(r, s)
    check_pass(g, MergeTransposes(), modified=True, ops=["Transpose", "Relu", "Sigmoid"])


def test_merge_refuses_different_perms_and_graph_outputs() -> None:
    b = Builder()
    x = b.input("x", (1, 3, 4, 5))
    r = b.op("Relu", b.op("Transpose", x, perm=TO_NHWC))
    s = b.op("Sigmoid", b.op("Transpose", x, perm=[0, 1, 3, 2]))
    out = b.op("Transpose", x, perm=TO_NHWC)
    g = b.outputs(r, s, out)
    check_pass(g, MergeTransposes(), modified=False)


# -- fold -------------------------------------------------------------------------------------
def test_fold_constant_transpose() -> None:
    b = Builder()
    x = b.input("x", (1, 4, 5, 3))
    c = b.op("Transpose", rng_const(b, (1, 3, 4, 5)), perm=TO_NHWC)
    g = b.outputs(b.op("Add", x, c))
    check_pass(g, FoldConstantTransposes(), modified=True, ops=["Add"], rtol=RTOL)
    assert g.nodes[0].inputs[1].const.shape == (1, 4, 5, 3)


def test_fold_refuses_graph_output() -> None:
    b = Builder()
    b.input("x", (1,))
    g = b.outputs(b.op("Transpose", rng_const(b, (2, 3)), perm=[1, 0]))
    check_pass(g, FoldConstantTransposes(), modified=False)


# -- push: unary and elementwise -----------------------------------------------------------
def test_push_through_unary_chain() -> None:
    b = Builder()
    x = b.input("x", (1, 3, 4, 5))
    y = b.op("Sigmoid", b.op("Relu", b.op("Transpose", x, perm=TO_NHWC)))
    g = b.outputs(y)
    check_pass(g, PushTransposes(), modified=True, ops=["Relu", "Sigmoid", "Transpose"])
    assert [n.op for n in g.nodes] == ["Relu", "Sigmoid", "Transpose"]
    assert g.nodes[0].inputs[0] is x


def test_push_refuses_shared_transpose() -> None:
    b = Builder()
    x = b.input("x", (1, 3, 4, 5))
    t = b.op("Transpose", x, perm=TO_NHWC)
    g = b.outputs(b.op("Relu", t), b.op("Reshape", t, b.const(np.array([-1], np.int64))))
    check_pass(g, PushTransposes(), modified=False)


def test_push_refuses_transpose_that_is_graph_output() -> None:
    b = Builder()
    x = b.input("x", (1, 3, 4, 5))
    t = b.op("Transpose", x, perm=TO_NHWC)
    g = b.outputs(b.op("Relu", t), t)
    check_pass(g, PushTransposes(), modified=False)


def test_push_binary_both_transposed() -> None:
    b = Builder()
    x, z = b.input("x", (1, 3, 4, 5)), b.input("z", (1, 3, 4, 5))
    y = b.op("Add", b.op("Transpose", x, perm=TO_NHWC), b.op("Transpose", z, perm=TO_NHWC))
    g = b.outputs(y)
    check_pass(g, PushTransposes(), modified=True, ops=["Add", "Transpose"], rtol=RTOL)


@pytest.mark.parametrize("shape", [(3,), (4, 1, 3), (1, 4, 5, 3), ()])
def test_push_binary_broadcast_constant(shape: tuple[int, ...]) -> None:
    b = Builder()
    x = b.input("x", (2, 3, 4, 5))
    y = b.op("Mul", b.op("Transpose", x, perm=TO_NHWC), rng_const(b, shape))
    g = b.outputs(b.op("Transpose", y, perm=TO_NCHW))
    check_pass(g, Cleanup(), modified=True, ops=["Mul"], rtol=RTOL)


def test_push_prelu_and_clip() -> None:
    b = Builder()
    x = b.input("x", (1, 3, 4, 5))
    t = b.op("Transpose", x, perm=TO_NHWC)
    y = b.op("PRelu", t, rng_const(b, (1, 1, 3)))
    y = b.op("Clip", y, b.const(np.float32(-0.5)), b.const(np.float32(0.5)))
    g = b.outputs(b.op("Transpose", y, perm=TO_NCHW))
    check_pass(g, Cleanup(), modified=True, ops=["PRelu", "Clip"], rtol=RTOL)


def test_push_inserts_inverse_when_it_cancels_later() -> None:
    """T(x) + y, read by T^-1 only: one transpose on y replaces two."""
    b = Builder()
    x, z = b.input("x", (1, 3, 4, 5)), b.input("z", (1, 4, 5, 3))
    y = b.op("Add", b.op("Transpose", x, perm=TO_NHWC), z)
    g = b.outputs(b.op("Transpose", y, perm=TO_NCHW))
    check_pass(g, Cleanup(), modified=True, ops=["Transpose", "Add"], rtol=RTOL)
    t = nodes(g, "Transpose")[0]
    assert t.inputs[0] is z and t.attrs["perm"] == TO_NCHW


def test_push_refuses_when_it_adds_transposes() -> None:
    b = Builder()
    x, z = b.input("x", (1, 3, 4, 5)), b.input("z", (1, 4, 5, 3))
    g = b.outputs(b.op("Add", b.op("Transpose", x, perm=TO_NHWC), z))
    check_pass(g, PushTransposes(), modified=False)


# -- push: axis ops ---------------------------------------------------------------------------
def test_push_concat_remaps_axis() -> None:
    b = Builder()
    x, z = b.input("x", (1, 3, 4, 5)), b.input("z", (1, 2, 4, 5))
    tx, tz = b.op("Transpose", x, perm=TO_NHWC), b.op("Transpose", z, perm=TO_NHWC)
    g = b.outputs(b.op("Concat", tx, tz, rng_const(b, (1, 4, 5, 2)), axis=-1))
    check_pass(g, PushTransposes(), modified=True, ops=["Concat", "Transpose"], rtol=RTOL)
    assert nodes(g, "Concat")[0].attrs["axis"] == 1


@pytest.mark.parametrize("with_axes", [False, True])
def test_push_pad_permutes_pads(with_axes: bool) -> None:
    b = Builder()
    x = b.input("x", (1, 3, 4, 5))
    t = b.op("Transpose", x, perm=TO_NHWC)
    if with_axes:  # pad H by (1, 2) and C by (0, 3) in NHWC terms
        pads, axes = b.const(np.array([1, 0, 2, 3], np.int64)), b.const(np.array([1, 3]))
        y = b.op("Pad", t, pads, b.const(np.float32(0.5)), axes)
    else:
        y = b.op("Pad", t, b.const(np.array([0, 1, 0, 2, 0, 2, 3, 1], np.int64)), mode="reflect")
    g = b.outputs(y)
    check_pass(g, PushTransposes(), modified=True, ops=["Pad", "Transpose"], rtol=RTOL)


@pytest.mark.parametrize("mode", ["scales", "sizes", "axes"])
def test_push_resize(mode: str) -> None:
    b = Builder()
    x = b.input("x", (1, 3, 4, 5))
    t = b.op("Transpose", x, perm=TO_NHWC)
    if mode == "scales":
        y = b.op("Resize", t, None, b.const(np.array([1, 2, 1.5, 1], np.float32)), mode="linear")
    elif mode == "sizes":
        y = b.op("Resize", t, None, None, b.const(np.array([1, 7, 9, 3], np.int64)))
    else:
        y = b.op("Resize", t, None, b.const(np.array([2, 3], np.float32)), axes=[1, 2])
    g = b.outputs(y)
    check_pass(g, PushTransposes(), modified=True, ops=["Resize", "Transpose"], rtol=RTOL)


@pytest.mark.parametrize(
    ("op", "axes", "keepdims"),
    [("ReduceMean", [1, 2], 1), ("ReduceSum", [1, 2], 0), ("ReduceMax", [-1], 0),
     ("ReduceL2", None, 0), ("ReduceMin", None, 1)],
)  # fmt: skip
def test_push_reduce(op: str, axes: list[int] | None, keepdims: int) -> None:
    b = Builder()
    x = b.input("x", (2, 3, 4, 5))
    t = b.op("Transpose", x, perm=TO_NHWC)
    axes_v = None if axes is None else b.const(np.array(axes, np.int64))
    g = b.outputs(b.op(op, t, axes_v, keepdims=keepdims))
    n_out = 0 if axes is None and not keepdims else 1
    want = [op] + ["Transpose"] * n_out
    check_pass(g, PushTransposes(), modified=True, ops=want, rtol=RTOL)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_push_softmax_remaps_axis(op: str) -> None:
    b = Builder()
    x = b.input("x", (2, 3, 4, 5))
    g = b.outputs(b.op(op, b.op("Transpose", x, perm=TO_NHWC), axis=-1))
    check_pass(g, PushTransposes(), modified=True, ops=[op, "Transpose"], rtol=RTOL)
    assert nodes(g, op)[0].attrs["axis"] == 1


@pytest.mark.parametrize("axes", [[3, 1], None])
def test_push_slice_remaps_axes(axes: list[int] | None) -> None:
    b = Builder()
    x = b.input("x", (2, 3, 6, 5))
    t = b.op("Transpose", x, perm=TO_NHWC)
    starts = b.const(np.array([1, 1] if axes else [0, 1], np.int64))
    ends = b.const(np.array([3, 5] if axes else [1, 4], np.int64))
    axes_v = None if axes is None else b.const(np.array(axes, np.int64))
    g = b.outputs(b.op("Slice", t, starts, ends, axes_v))
    check_pass(g, PushTransposes(), modified=True, ops=["Slice", "Transpose"], rtol=RTOL)


def test_push_refuses_non_constant_axes() -> None:
    b = Builder()
    x = b.input("x", (2, 3, 4, 5))
    axes = b.input("axes", (1,), I64)
    g = b.outputs(b.op("ReduceSum", b.op("Transpose", x, perm=TO_NHWC), axes))
    check_pass(g, PushTransposes(), modified=False, feeds={
        "x": np.ones((2, 3, 4, 5), np.float32), "axes": np.array([1], np.int64)})  # fmt: skip


# -- push: layout-sensitive ops ----------------------------------------------------------------
@pytest.mark.parametrize("op", ["MaxPool", "AveragePool", "GlobalAveragePool", "LRN"])
def test_push_flips_pool_format_toward_layout(op: str) -> None:
    attrs = {"LRN": {"size": 3}, "GlobalAveragePool": {}}.get(op, {"kernel_shape": [2, 2]})
    b = Builder()
    x = b.input("x", (1, 4, 5, 3))
    g = b.outputs(b.op(op, b.op("Transpose", x, perm=TO_NCHW), **attrs))
    check_pass(g, PushTransposes(layout="NHWC"), modified=True, ops=[op, "Transpose"], rtol=RTOL)
    assert nodes(g, op)[0].attrs["format"] == "NHWC"


def test_push_layout_sensitive_needs_layout() -> None:
    b = Builder()
    x = b.input("x", (1, 4, 5, 3))
    g = b.outputs(b.op("MaxPool", b.op("Transpose", x, perm=TO_NCHW), kernel_shape=[2, 2]))
    check_pass(g, PushTransposes(), modified=False)
    check_pass(g, PushTransposes(layout="NCHW"), modified=False)


# -- transpose -> reshape ---------------------------------------------------------------------
def test_transpose_of_unit_axes_is_reshape() -> None:
    b = Builder()
    x = b.input("x", ("N", 1, 1, 8))
    g = b.outputs(b.op("Transpose", x, perm=TO_NCHW))
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 1, 1, 8)).astype(np.float32)}
    check_pass(g, TransposeToReshape(), modified=True, ops=["Reshape"], feeds=feeds)
    assert list(g.nodes[0].inputs[1].const) == [0, 8, 1, 1]


def test_transpose_moving_real_axes_stays() -> None:
    b = Builder()
    x = b.input("x", (1, 2, 1, 8))
    g = b.outputs(b.op("Transpose", x, perm=TO_NCHW))
    check_pass(g, TransposeToReshape(), modified=False)


# -- the cleanup as a whole -------------------------------------------------------------------
def test_cleanup_residual_block_keeps_only_boundary() -> None:
    """NHWC convs with NCHW Add/Relu between them: only the input/output transposes remain."""
    b = Builder()
    x = b.input("x", (1, 3, 6, 6))

    def conv(v, seed):
        t = b.op("Transpose", v, perm=TO_NHWC)
        y = b.op("Conv", t, rng_const(b, (3, 3, 3, 3), seed), pads=[1, 1, 1, 1], format="NHWC")
        return b.op("Transpose", y, perm=TO_NCHW)

    r = b.op("Relu", conv(x, 1))
    y = b.op("Relu", b.op("Add", conv(r, 2), x))
    g = b.outputs(b.op("Concat", y, conv(y, 3), axis=1))
    check_pass(g, Cleanup("NHWC"), modified=True, rtol=RTOL)
    assert len(nodes(g, "Transpose")) == 2, op_types(g)
