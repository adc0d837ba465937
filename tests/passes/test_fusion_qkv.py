"""Parallel MatMuls on one input (Q/K/V projections) -> one MatMul + Split."""

from __future__ import annotations

import numpy as np
import pytest
from pass_testing import Builder, check_pass, op_types

from ir import Graph, Value
from passes.fusions.qkv import FuseParallelMatMuls

TOL = {"rtol": 1e-4, "atol": 1e-5}
rng = np.random.default_rng(4)


def _f32(*shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def _proj(b: Builder, x: Value, n: int, bias: bool = True, act: str = "none") -> Value:
    ins = [x, b.const(_f32(x.shape[-1], n))] + ([b.const(_f32(n))] if bias else [])
    if not bias and act == "none":
        return b.op("MatMul", *ins)
    return b.op("MatMulAct", *ins, activation=act)


@pytest.mark.parametrize("shape", [(2, 5, 8), (5, 8), (8,)], ids=str)
def test_three_projections_fuse(shape: tuple) -> None:
    b = Builder()
    x = b.input("x", shape)
    q, k, v = (_proj(b, x, 6) for _ in range(3))
    g = b.outputs(b.op("Add", q, k), v)
    check_pass(g, FuseParallelMatMuls(), modified=True, ops=["MatMulAct", "Split", "Add"], **TOL)
    mm, split = g.nodes[:2]
    assert mm.input(1).shape == (8, 18) and mm.input(2).shape == (18,)
    assert split.attrs == {"axis": -1, "num_outputs": 3} and split.input(1) is None
    assert g.outputs[1] is split.outputs[2]


def test_plain_matmuls_of_different_widths() -> None:
    b = Builder()
    x = b.input("x", (3, 8))
    outs = [_proj(b, x, n, bias=False) for n in (4, 6, 2)]
    g = b.outputs(*outs)
    check_pass(g, FuseParallelMatMuls(), modified=True, ops=["MatMul", "Split"], **TOL)
    assert g.nodes[1].input(1).const.tolist() == [4, 6, 2]
    assert [v.shape for v in g.outputs] == [(3, 4), (3, 6), (3, 2)]


def test_mixed_bias_and_no_bias() -> None:
    b = Builder()
    x = b.input("x", (3, 8))
    g = b.outputs(_proj(b, x, 4, bias=False), _proj(b, x, 4))
    check_pass(g, FuseParallelMatMuls(), modified=True, ops=["MatMulAct", "Split"], **TOL)


def test_same_activation_fuses_and_different_ones_do_not() -> None:
    b = Builder()
    x = b.input("x", (3, 8))
    g = b.outputs(_proj(b, x, 4, act="Relu"), _proj(b, x, 4, act="Relu"), _proj(b, x, 4))
    check_pass(g, FuseParallelMatMuls(), modified=True,
               ops=["MatMulAct", "MatMulAct", "Split"], **TOL)  # fmt: skip
    fused = next(n for n in g.nodes if n.input(1).shape == (8, 8))
    assert fused.attrs["activation"] == "Relu"


def _refused(g: Graph) -> None:
    check_pass(g, FuseParallelMatMuls(), modified=False, ops=op_types(g), **TOL)


def test_refusals() -> None:
    b = Builder()  # non-constant weight
    x, w = b.input("x", (3, 8)), b.input("w", (8, 4))
    _refused(b.outputs(b.op("MatMul", x, w), _proj(b, x, 4, bias=False)))
    b = Builder()  # the shared value is the B operand
    x = b.input("x", (8, 3))
    _refused(b.outputs(*(b.op("MatMul", b.const(_f32(4, 8)), x) for _ in range(2))))
    b = Builder()  # a single projection
    x = b.input("x", (3, 8))
    _refused(b.outputs(_proj(b, x, 4)))
    b = Builder()  # batched (3-D) weights
    x = b.input("x", (2, 3, 8))
    _refused(b.outputs(b.op("MatMul", x, b.const(_f32(2, 8, 4))),
                       b.op("MatMul", x, b.const(_f32(2, 8, 4)))))  # fmt: skip
    b = Builder()  # weights of another dtype than the input (a float16 copy)
    x = b.input("x", (3, 8))
    h = b.op("Cast", x, to=10)
    _refused(b.outputs(b.op("MatMul", h, b.const(_f32(8, 4).astype(np.float16))),
                       b.op("MatMul", x, b.const(_f32(8, 4)))))  # fmt: skip


def test_float16() -> None:
    b = Builder()
    x = b.op("Cast", b.input("x", (3, 8)), to=10)
    outs = [b.op("MatMul", x, b.const(_f32(8, 4).astype(np.float16))) for _ in range(2)]
    g = b.outputs(*outs)
    check_pass(g, FuseParallelMatMuls(), modified=True, ops=["Cast", "MatMul", "Split"],
               rtol=1e-3, atol=1e-3)  # fmt: skip
