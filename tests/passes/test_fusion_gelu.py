"""GELU (erf and tanh forms), Swish and HardSwish recognition."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pass_testing import Builder, check_pass, op_types

from ir import Value
from passes.fusions import Fusions

TOL = {"rtol": 1e-4, "atol": 1e-5}


def _k(b: Builder, v: float) -> Value:
    return b.const(np.array(v, np.float32))


def _erf_factor(b: Builder, x: Value, mul: bool) -> Value:
    s = b.op("Mul", x, _k(b, 1 / math.sqrt(2))) if mul else b.op("Div", x, _k(b, math.sqrt(2)))
    return b.op("Add", _k(b, 1.0), b.op("Erf", s))


def _tanh_factor(b: Builder, x: Value, pow_cube: bool) -> Value:
    cube = b.op("Pow", x, _k(b, 3.0)) if pow_cube else b.op("Mul", x, b.op("Mul", x, x))
    inner = b.op("Add", x, b.op("Mul", _k(b, 0.044715), cube))
    t = b.op("Tanh", b.op("Mul", _k(b, math.sqrt(2 / math.pi)), inner))
    return b.op("Add", t, _k(b, 1.0))


def _outer(b: Builder, x: Value, t: Value, form: int) -> Value:
    if form == 0:
        return b.op("Mul", b.op("Mul", x, t), _k(b, 0.5))  # (x * t) * 0.5
    if form == 1:
        return b.op("Mul", x, b.op("Mul", _k(b, 0.5), t))  # x * (0.5 * t)
    if form == 2:
        return b.op("Mul", t, b.op("Mul", _k(b, 0.5), x))  # (0.5 * x) * t
    return b.op("Div", b.op("Mul", t, x), _k(b, 2.0))  # (t * x) / 2


@pytest.mark.parametrize("form", range(4))
@pytest.mark.parametrize("variant", [False, True])
@pytest.mark.parametrize("kind", ["erf", "tanh"])
def test_gelu_recognized(kind: str, variant: bool, form: int) -> None:
    b = Builder()
    x = b.input("x", (3, 7))
    t = _erf_factor(b, x, variant) if kind == "erf" else _tanh_factor(b, x, variant)
    g = b.outputs(_outer(b, x, t, form))
    check_pass(g, Fusions(), modified=True, ops=["Gelu"], **TOL)
    assert g.nodes[0].attr("approximate") == ("none" if kind == "erf" else "tanh")


def test_gelu_refused_when_intermediate_escapes_or_constant_is_off() -> None:
    b = Builder()
    x = b.input("x", (3, 7))
    t = _erf_factor(b, x, False)
    g = b.outputs(_outer(b, x, t, 0), t)
    check_pass(g, Fusions(), modified=False, ops=op_types(g), **TOL)
    b = Builder()
    x = b.input("x", (3, 7))
    s = b.op("Div", x, _k(b, 1.5))
    t = b.op("Add", _k(b, 1.0), b.op("Erf", s))
    g = b.outputs(_outer(b, x, t, 0))
    check_pass(g, Fusions(), modified=False, ops=op_types(g), **TOL)


def test_gelu_refused_when_x_differs() -> None:
    b = Builder()
    x, z = b.input("x", (3, 7)), b.input("z", (3, 7))
    g = b.outputs(_outer(b, z, _erf_factor(b, x, False), 0))
    check_pass(g, Fusions(), modified=False, ops=op_types(g), **TOL)


# -- Swish / HardSwish ----------------------------------------------------------------------
def test_swish_recognized() -> None:
    b = Builder()
    x = b.input("x", (3, 7))
    g = b.outputs(b.op("Mul", b.op("Sigmoid", x), x))
    check_pass(g, Fusions(), modified=True, ops=["Swish"], **TOL)
    b = Builder()
    x = b.input("x", (3, 7))
    g = b.outputs(b.op("Mul", x, b.op("Sigmoid", b.op("Mul", _k(b, 1.702), x))))
    check_pass(g, Fusions(), modified=True, ops=["Swish"], **TOL)
    assert np.isclose(g.nodes[0].attrs["alpha"], 1.702)


def test_swish_refused_for_other_operand() -> None:
    b = Builder()
    x, z = b.input("x", (3, 7)), b.input("z", (3, 7))
    g = b.outputs(b.op("Mul", b.op("Sigmoid", x), z))
    check_pass(g, Fusions(), modified=False, ops=op_types(g), **TOL)


@pytest.mark.parametrize("form", range(5))
def test_hard_swish_recognized(form: int) -> None:
    b = Builder()
    x = b.input("x", (3, 7))
    if form == 4:
        y = b.op("Mul", x, b.op("HardSigmoid", x, alpha=1 / 6, beta=0.5))
    else:
        r6 = b.op("Clip", b.op("Add", x, _k(b, 3.0)), _k(b, 0.0), _k(b, 6.0))
        y = [
            lambda: b.op("Div", b.op("Mul", x, r6), _k(b, 6.0)),
            lambda: b.op("Mul", _k(b, 1 / 6), b.op("Mul", r6, x)),
            lambda: b.op("Mul", b.op("Div", r6, _k(b, 6.0)), x),
            lambda: b.op("Mul", x, b.op("Mul", r6, _k(b, 1 / 6))),
        ][form]()
    g = b.outputs(y)
    check_pass(g, Fusions(), modified=True, ops=["HardSwish"], **TOL)


def test_hard_swish_refused_for_default_hard_sigmoid() -> None:
    b = Builder()
    x = b.input("x", (3, 7))
    g = b.outputs(b.op("Mul", x, b.op("HardSigmoid", x)))
    check_pass(g, Fusions(), modified=False, ops=op_types(g), **TOL)


def test_conv_swish_becomes_conv_act_with_all_activations() -> None:
    from passes.base import PassContext

    b = Builder()
    x = b.input("x", (1, 3, 5, 5))
    w = b.const(np.random.default_rng(0).standard_normal((4, 3, 1, 1)).astype(np.float32))
    y = b.op("Conv", x, w, kernel_shape=[1, 1])
    g = b.outputs(b.op("Mul", y, b.op("Sigmoid", y)))
    ctx = PassContext(options={"fuse_activations": "all"})
    check_pass(g, Fusions(ctx), modified=True, ops=["ConvAct"], **TOL)
    assert g.nodes[0].attrs["activation"] == "Swish"
