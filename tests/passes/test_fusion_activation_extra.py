"""Softplus and Mish recognition."""

from __future__ import annotations

import numpy as np
import pytest
from pass_testing import Builder, check_pass, op_types

from ir import DataType, Value
from passes.fusions import Fusions

TOL = {"rtol": 1e-5, "atol": 1e-6}


def _softplus_chain(b: Builder, x: Value, swap: bool) -> Value:
    one = b.const(np.array(1.0, np.float32))
    e = b.op("Exp", x)
    return b.op("Log", b.op("Add", one, e) if swap else b.op("Add", e, one))


@pytest.mark.parametrize("swap", [False, True])
def test_softplus_recognized(swap: bool) -> None:
    b = Builder()
    x = b.input("x", (3, 7))
    g = b.outputs(_softplus_chain(b, x, swap))
    check_pass(g, Fusions(), modified=True, ops=["Softplus"], **TOL)


@pytest.mark.parametrize("form", ["softplus", "chain", "chain_swapped"])
def test_mish_recognized(form: str) -> None:
    b = Builder()
    x = b.input("x", (2, 3, 5))
    sp = b.op("Softplus", x) if form == "softplus" else _softplus_chain(b, x, form != "chain")
    t = b.op("Tanh", sp)
    g = b.outputs(b.op("Mul", t, x) if form == "chain" else b.op("Mul", x, t))
    check_pass(g, Fusions(), modified=True, ops=["Mish"], **TOL)


def test_refusals() -> None:
    # Log(Exp(x) + 2) is not softplus
    b = Builder()
    x = b.input("x", (3, 7))
    g = b.outputs(b.op("Log", b.op("Add", b.op("Exp", x), b.const(np.array(2.0, np.float32)))))
    check_pass(g, Fusions(), modified=False, ops=op_types(g), **TOL)
    # Mish of another tensor; the softplus is also an output
    b = Builder()
    x, z = b.input("x", (3, 7)), b.input("z", (3, 7))
    sp = b.op("Softplus", x)
    g = b.outputs(b.op("Mul", z, b.op("Tanh", sp)))
    check_pass(g, Fusions(), modified=False, ops=op_types(g), **TOL)
    b = Builder()
    x = b.input("x", (3, 7))
    sp = b.op("Softplus", x)
    g = b.outputs(b.op("Mul", x, b.op("Tanh", sp)), sp)
    check_pass(g, Fusions(), modified=False, ops=op_types(g), **TOL)


def test_float16_mish() -> None:
    b = Builder()
    x = b.input("x", (4, 4), DataType.FLOAT16)
    g = b.outputs(b.op("Mul", x, b.op("Tanh", b.op("Softplus", x))))
    check_pass(g, Fusions(), modified=True, ops=["Mish"], rtol=2e-3, atol=2e-3)
