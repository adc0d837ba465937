"""MatMul + bias Add (+ activation) -> MatMulAct."""

from __future__ import annotations

import numpy as np
import pytest
from pass_testing import Builder, check_pass, op_types

from ir import Graph
from passes.base import PassContext
from passes.fusions import Fusions

TOL = {"rtol": 1e-4, "atol": 1e-5}
ALL = PassContext(options={"fuse_activations": "all"})
rng = np.random.default_rng(1)


def _f32(*shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize(
    "a_shape,bias_shape",
    [((3, 5), (4,)), ((2, 3, 5), (1, 1, 4)), ((2, 3, 5), (1,)), ((5,), (4,))],
    ids=str,
)
def test_matmul_bias_fuses(a_shape: tuple, bias_shape: tuple) -> None:
    b = Builder()
    a = b.input("a", a_shape)
    y = b.op("Add", b.const(_f32(*bias_shape)), b.op("MatMul", a, b.const(_f32(5, 4))))
    g = b.outputs(y)
    check_pass(g, Fusions(), modified=True, ops=["MatMulAct"], **TOL)
    node = g.nodes[0]
    assert node.input(2).shape == (4,) and node.attr("activation") == "none"


def test_non_constant_b_is_fine() -> None:
    b = Builder()
    a, w = b.input("a", (2, 3, 5)), b.input("w", (5, 4))
    g = b.outputs(b.op("Add", b.op("MatMul", a, w), b.const(_f32(4))))
    check_pass(g, Fusions(), modified=True, ops=["MatMulAct"], **TOL)


@pytest.mark.parametrize("act", ["Relu", "Tanh", "Sigmoid", "HardSwish", "LeakyRelu", "Gelu"])
def test_matmul_bias_activation_fuses(act: str) -> None:
    b = Builder()
    a = b.input("a", (2, 3, 5))
    y = b.op("Add", b.op("MatMul", a, b.const(_f32(5, 4))), b.const(_f32(4)))
    g = b.outputs(b.op(act, y))
    check_pass(g, Fusions(ALL), modified=True, ops=["MatMulAct"], **TOL)
    assert g.nodes[0].attr("activation") == act


def test_relu6_after_matmul_by_default() -> None:
    b = Builder()
    a = b.input("a", (3, 5))
    y = b.op("Add", b.op("MatMul", a, b.const(_f32(5, 4))), b.const(_f32(4)))
    lo, hi = b.const(np.array(0, np.float32)), b.const(np.array(6, np.float32))
    g = b.outputs(b.op("Clip", y, lo, hi))
    check_pass(g, Fusions(), modified=True, ops=["MatMulAct"], **TOL)
    assert g.nodes[0].attrs["activation_params"] == [0.0, 6.0]


def _refused(g: Graph) -> None:
    check_pass(g, Fusions(ALL), modified=False, ops=op_types(g), **TOL)


@pytest.mark.parametrize("bias_shape", [(3, 4), (2, 1, 4), (1, 1, 1, 4), (3, 1)], ids=str)
def test_bias_not_over_the_last_axis_is_refused(bias_shape: tuple) -> None:
    b = Builder()
    a = b.input("a", (3, 5))
    y = b.op("Add", b.op("MatMul", a, b.const(_f32(5, 4))), b.const(_f32(*bias_shape)))
    _refused(b.outputs(y))


def test_shared_product_graph_output_and_variable_bias_are_refused() -> None:
    b = Builder()
    a = b.input("a", (3, 5))
    mm = b.op("MatMul", a, b.const(_f32(5, 4)))
    _refused(b.outputs(b.op("Add", mm, b.const(_f32(4))), b.op("Relu", mm)))
    b = Builder()
    a = b.input("a", (3, 5))
    mm = b.op("MatMul", a, b.const(_f32(5, 4)))
    _refused(b.outputs(b.op("Add", mm, b.const(_f32(4))), mm))
    b = Builder()
    a, c = b.input("a", (3, 5)), b.input("c", (4,))
    _refused(b.outputs(b.op("Add", b.op("MatMul", a, b.const(_f32(5, 4))), c)))


def test_one_dimensional_b_is_refused() -> None:
    b = Builder()
    a = b.input("a", (3, 5))
    _refused(b.outputs(b.op("Add", b.op("MatMul", a, b.const(_f32(5))), b.const(_f32(1)))))


def test_matmul_act_float16() -> None:
    b = Builder()
    a = b.input("a", (3, 5))
    a16 = b.op("Cast", a, to=10)
    w = b.const(_f32(5, 4).astype(np.float16))
    y = b.op("Add", b.op("MatMul", a16, w), b.const(_f32(4).astype(np.float16)))
    g = b.outputs(b.op("Relu", y))
    check_pass(g, Fusions(), modified=True, ops=["Cast", "MatMulAct"], rtol=1e-3, atol=1e-3)
