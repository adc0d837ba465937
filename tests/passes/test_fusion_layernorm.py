"""LayerNorm recognition (decomposed -> LayerNormalization) and affine absorption."""

from __future__ import annotations

import numpy as np
import pytest
from pass_testing import Builder, check_pass, op_types

from ir import Value
from passes.fusions import Fusions

TOL = {"rtol": 1e-4, "atol": 1e-5}
rng = np.random.default_rng(2)


def _c(value) -> np.ndarray:
    return np.asarray(value, np.float32)


def _decomposed(b: Builder, x: Value, axes=(-1,), square: str = "pow", recip: bool = False,
                eps: float = 1e-5, keepdims: int = 1, axes2=None) -> Value:  # fmt: skip
    ax = b.const(np.array(axes, np.int64))
    d = b.op("Sub", x, b.op("ReduceMean", x, ax, keepdims=keepdims))
    sq = b.op("Pow", d, b.const(_c(2))) if square == "pow" else b.op("Mul", d, d)
    ax2 = ax if axes2 is None else b.const(np.array(axes2, np.int64))
    var = b.op("ReduceMean", sq, ax2, keepdims=1)
    std = b.op("Sqrt", b.op("Add", b.const(_c(eps)), var))
    if recip:
        return b.op("Mul", b.op("Reciprocal", std), d)
    return b.op("Div", d, std)


@pytest.mark.parametrize("square", ["pow", "mul"])
@pytest.mark.parametrize("recip", [False, True])
@pytest.mark.parametrize("affine", ["none", "scale", "both", "bias_first"])
def test_layer_norm_recognized(square: str, recip: bool, affine: str) -> None:
    b = Builder()
    x = b.input("x", (2, 3, 8))
    y = _decomposed(b, x, square=square, recip=recip)
    gamma, beta = b.const(rng.standard_normal(8).astype(np.float32)), b.const(_c(rng.random(8)))
    if affine == "bias_first":
        y = b.op("Mul", b.op("Add", y, beta), gamma)
    elif affine != "none":
        y = b.op("Mul", gamma, y)
        if affine == "both":
            y = b.op("Add", y, beta)
    g = b.outputs(y)
    check_pass(g, Fusions(), modified=True, ops=["LayerNormalization"], **TOL)
    ln = g.nodes[0]
    assert ln.attrs["axis"] == -1 and np.isclose(ln.attrs["epsilon"], 1e-5)
    assert ln.input(1).shape == (8,)
    assert (ln.input(2) is not None) == (affine in ("both", "bias_first"))


def test_layer_norm_over_two_trailing_axes() -> None:
    b = Builder()
    x = b.input("x", (2, 3, 4))
    y = b.op("Mul", _decomposed(b, x, axes=(1, 2)), b.const(_c(rng.random((3, 4)))))
    g = b.outputs(y)
    check_pass(g, Fusions(), modified=True, ops=["LayerNormalization"], **TOL)
    assert g.nodes[0].attrs["axis"] == -2


@pytest.mark.parametrize(
    "kw",
    [
        {"axes": (0,)},  # not trailing
        {"axes": (-1,), "axes2": (0,)},  # different axes
        {"keepdims": 0},
    ],
    ids=["not-trailing", "mismatched-axes", "no-keepdims"],
)
def test_refuses_wrong_axes(kw: dict) -> None:
    b = Builder()
    x = b.input("x", (4, 4))
    y = _decomposed(b, x, **kw)
    g = b.outputs(y)
    before = op_types(g)
    assert not Fusions().run(g) and op_types(g) == before


def test_refuses_shared_intermediate_and_graph_output_in_the_middle() -> None:
    b = Builder()
    x = b.input("x", (2, 8))
    y = _decomposed(b, x)
    d = y.producer.input(0)  # the centered value, read elsewhere too
    g = b.outputs(y, b.op("Relu", d))
    check_pass(g, Fusions(), modified=False, ops=op_types(g), **TOL)
    b = Builder()
    x = b.input("x", (2, 8))
    y = _decomposed(b, x)
    g = b.outputs(y, y.producer.input(1))  # the std is a graph output
    check_pass(g, Fusions(), modified=False, ops=op_types(g), **TOL)


def test_refuses_affine_over_other_dims_and_variable_gamma() -> None:
    b = Builder()
    x = b.input("x", (2, 3, 8))
    y = b.op("Mul", _decomposed(b, x), b.const(_c(rng.random((3, 1)))))
    g = b.outputs(y)
    check_pass(g, Fusions(), modified=True, ops=["LayerNormalization", "Mul"], **TOL)
    b = Builder()
    x, gamma = b.input("x", (2, 8)), b.input("gamma", (8,))
    g = b.outputs(b.op("Mul", _decomposed(b, x), gamma))
    check_pass(g, Fusions(), modified=True, ops=["LayerNormalization", "Mul"], **TOL)


def test_refuses_double_and_dynamic_normalized_dim() -> None:
    b = Builder()
    x = b.input("x", (2, 8))
    g = b.outputs(_decomposed(b, b.op("Cast", x, to=11)))
    assert not Fusions().run(g)
    b = Builder()
    x = b.input("x", (2, "n"))
    g = b.outputs(_decomposed(b, x))
    assert not Fusions().run(g)
