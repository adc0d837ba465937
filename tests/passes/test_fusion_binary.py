"""Binary + activation -> AddAct / SubAct / MulAct / DivAct (FuseBinaryActivations)."""

from __future__ import annotations

import numpy as np
import pytest
from pass_testing import Builder, check_pass, op_types

from ir import DataType, Graph, Value
from passes.base import PassContext
from passes.fusions.binary import FuseBinaryActivations
from passes.manager import PassManager
from passes.pipeline import build_pipeline

TOL = {"rtol": 1e-6, "atol": 1e-6}


def _act(b: Builder, y: Value, act: str) -> Value:
    if act == "Relu6":
        return b.op("Clip", y, b.const(np.float32(0)), b.const(np.float32(6)))
    return b.op(act, y)


@pytest.mark.parametrize("act", ["Relu", "Relu6", "Sigmoid", "Tanh"])
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
def test_binary_activation_fuses(op: str, act: str) -> None:
    b = Builder()
    x, z = b.input("x", (2, 3, 4)), b.input("z", (3, 1))  # broadcasting
    g = b.outputs(_act(b, b.op(op, x, z), act))
    check_pass(g, FuseBinaryActivations(), modified=True, ops=[f"{op}Act"], **TOL)
    node = g.nodes[0]
    want = ("Clip", [0.0, 6.0]) if act == "Relu6" else (act, None)
    assert (node.attrs["activation"], node.attrs.get("activation_params")) == want
    assert [v.name for v in node.inputs] == ["x", "z"]


def test_constant_operand_and_float16() -> None:
    b = Builder()
    x = b.input("x", (2, 5), DataType.FLOAT16)
    g = b.outputs(b.op("Relu", b.op("Sub", b.const(np.ones(5, np.float16)), x)))
    check_pass(g, FuseBinaryActivations(), modified=True, ops=["SubAct"], **TOL)


def test_refusals() -> None:
    # the binary output is read elsewhere
    b = Builder()
    x, z = b.input("x", (2, 3)), b.input("z", (2, 3))
    s = b.op("Add", x, z)
    g = b.outputs(b.op("Relu", s), s)
    check_pass(g, FuseBinaryActivations(), modified=False, ops=op_types(g))
    # integer Add
    b = Builder()
    x, z = b.input("x", (2, 3), DataType.INT32), b.input("z", (2, 3), DataType.INT32)
    g = b.outputs(b.op("Relu", b.op("Add", x, z)))
    check_pass(g, FuseBinaryActivations(), modified=False, ops=op_types(g))
    # LeakyRelu has no MindSpore Lite fused form (unless fuse_activations=all)
    b = Builder()
    x, z = b.input("x", (2, 3)), b.input("z", (2, 3))
    g = b.outputs(b.op("LeakyRelu", b.op("Mul", x, z), alpha=0.2))
    check_pass(g, FuseBinaryActivations(), modified=False, ops=op_types(g))
    ctx = PassContext(options={"fuse_activations": "all"})
    check_pass(g, FuseBinaryActivations(ctx), modified=True, ops=["MulAct"], **TOL)
    assert g.nodes[0].attrs["activation_params"] == [pytest.approx(0.2)]


def _gelu_tanh_and_hard_swish() -> Graph:
    b = Builder()
    x = b.input("x", (3, 7))
    k = lambda v: b.const(np.array(v, np.float32))  # noqa: E731
    inner = b.op("Add", x, b.op("Mul", k(0.044715), b.op("Pow", x, k(3.0))))
    t = b.op("Tanh", b.op("Mul", k(float(np.sqrt(2 / np.pi))), inner))
    gelu = b.op("Mul", b.op("Mul", x, b.op("Add", t, k(1.0))), k(0.5))
    r6 = b.op("Clip", b.op("Add", gelu, k(3.0)), k(0.0), k(6.0))
    return b.outputs(b.op("Div", b.op("Mul", gelu, r6), k(6.0)))


def test_recognitions_win_in_the_pipeline() -> None:
    """Tanh(k * inner) of GELU and Clip(x + 3) of HardSwish are not taken first."""
    g = _gelu_tanh_and_hard_swish()
    PassManager(build_pipeline("full", PassContext())).run(g)
    assert op_types(g) == ["Gelu", "HardSwish"]


def test_residual_block_in_the_pipeline() -> None:
    rng = np.random.default_rng(0)
    b = Builder()
    x = b.input("x", (1, 4, 6, 6))
    w = b.const(rng.standard_normal((4, 4, 3, 3)).astype(np.float32))
    y = b.op("Conv", x, w, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    g = b.outputs(b.op("Relu", b.op("Add", y, x)))
    PassManager(build_pipeline("full", PassContext())).run(g)
    assert op_types(g) == ["AddAct", "Conv"]
    g2 = Builder()
    x = g2.input("x", (1, 4, 6, 6))
    y = g2.op("Conv", x, w, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    g2 = g2.outputs(g2.op("Relu", g2.op("Add", y, x)))
    PassManager(build_pipeline("full", PassContext(), ["FuseBinaryActivations"])).run(g2)
    assert op_types(g2) == ["Add", "Conv", "Relu"]


def test_two_input_sum_is_an_add() -> None:
    b = Builder()
    x, z = b.input("x", (2, 3)), b.input("z", (2, 3))
    g = b.outputs(b.op("Relu", b.op("Sum", x, z)))
    check_pass(g, FuseBinaryActivations(), modified=True, ops=["AddAct"], **TOL)
    b = Builder()
    x, z = b.input("x", (2, 3)), b.input("z", (2, 3))
    g = b.outputs(b.op("Relu", b.op("Sum", x, z, x)))  # three inputs: no binary op
    check_pass(g, FuseBinaryActivations(), modified=False, ops=op_types(g), **TOL)
