"""RMSNorm, InstanceNorm, GroupNorm and L2Norm recognition."""

from __future__ import annotations

import numpy as np
import pytest
from pass_testing import Builder, check_pass, op_types

from ir import Value
from passes.fusions import Fusions

rng = np.random.default_rng(0)
TOL = {"rtol": 1e-4, "atol": 1e-5}


def _k(b: Builder, v: float) -> Value:
    return b.const(np.array(v, np.float32))


def _axes(b: Builder, *axes: int) -> Value:
    return b.const(np.array(axes, np.int64))


def _sq(b: Builder, x: Value, pow_form: bool) -> Value:
    return b.op("Pow", x, _k(b, 2.0)) if pow_form else b.op("Mul", x, x)


def _div(b: Builder, x: Value, den: Value, form: int) -> Value:
    if form == 0:
        return b.op("Div", x, den)
    if form == 1:
        return b.op("Mul", b.op("Reciprocal", den), x)
    return b.op("Mul", x, b.op("Div", _k(b, 1.0), den))


# -- RMSNorm ----------------------------------------------------------------------------------
def _rms(b: Builder, x: Value, axes: tuple[int, ...], form: int, pow_form: bool) -> Value:
    ms = b.op("ReduceMean", _sq(b, x, pow_form), _axes(b, *axes))
    return _div(b, x, b.op("Sqrt", b.op("Add", ms, _k(b, 1e-6))), form)


@pytest.mark.parametrize("pow_form", [True, False])
@pytest.mark.parametrize("form", range(3))
def test_rms_norm(form: int, pow_form: bool) -> None:
    b = Builder()
    x = b.input("x", (2, 3, 8))
    g = b.outputs(_rms(b, x, (-1,), form, pow_form))
    check_pass(g, Fusions(), modified=True, ops=["RMSNormalization"], **TOL)
    node = g.nodes[0]
    assert node.attrs["axis"] == -1 and np.isclose(node.attrs["epsilon"], 1e-6)


def test_rms_norm_gamma_over_two_axes() -> None:
    b = Builder()
    x = b.input("x", ("n", 3, 8))
    gamma = b.const(rng.standard_normal((3, 8)).astype(np.float32))
    g = b.outputs(b.op("Mul", gamma, _rms(b, x, (1, 2), 0, True)))
    check_pass(g, Fusions(), modified=True, ops=["RMSNormalization"], **TOL)
    node = g.nodes[0]
    assert node.attrs["axis"] == -2
    np.testing.assert_allclose(node.input(1).const, gamma.const)


def test_rms_refusals() -> None:
    b = Builder()
    x = b.input("x", (2, 3, 8))
    g = b.outputs(_rms(b, x, (1,), 0, True))  # not the trailing axes
    check_pass(g, Fusions(), modified=False, ops=op_types(g), **TOL)
    b = Builder()
    x = b.input("x", (2, 3, 8))
    y = _rms(b, x, (-1,), 0, True)
    gamma = b.const(np.ones((3, 1), np.float32))  # reaches a non-normalized axis
    g = b.outputs(b.op("Mul", y, gamma))
    check_pass(g, Fusions(), modified=True, ops=["Mul", "RMSNormalization"], **TOL)


def test_mean_centered_is_a_layer_norm_not_rms() -> None:
    b = Builder()
    x = b.input("x", (2, 3, 8))
    d = b.op("Sub", x, b.op("ReduceMean", x, _axes(b, -1)))
    g = b.outputs(_rms(b, d, (-1,), 0, True))
    check_pass(g, Fusions(), modified=True, ops=["LayerNormalization"], **TOL)


# -- InstanceNorm -----------------------------------------------------------------------------
def _centered(b: Builder, x: Value, axes: tuple[int, ...], form: int = 0) -> Value:
    d = b.op("Sub", x, b.op("ReduceMean", x, _axes(b, *axes)))
    var = b.op("ReduceMean", _sq(b, d, True), _axes(b, *axes))
    return _div(b, d, b.op("Sqrt", b.op("Add", var, _k(b, 1e-5))), form)


@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
def test_instance_norm_with_affine(fmt: str) -> None:
    b = Builder()
    nchw = fmt == "NCHW"
    x = b.input("x", (2, 4, 5, 6) if nchw else (2, 5, 6, 4))
    y = _centered(b, x, (2, 3) if nchw else (1, 2), form=1)
    cshape = (4, 1, 1) if nchw else (4,)
    y = b.op("Mul", y, b.const(rng.standard_normal(cshape).astype(np.float32)))
    y = b.op("Add", b.const(rng.standard_normal(cshape).astype(np.float32)), y)
    g = b.outputs(y)
    check_pass(g, Fusions(), modified=True, ops=["InstanceNormalization"], **TOL)
    assert g.nodes[0].attr("format") == fmt


def test_rank3_over_last_axis_stays_a_layer_norm() -> None:
    b = Builder()
    x = b.input("x", (2, 4, 6))
    g = b.outputs(_centered(b, x, (2,)))
    check_pass(g, Fusions(), modified=True, ops=["LayerNormalization"], **TOL)


def test_instance_affine_refused_when_not_per_channel() -> None:
    b = Builder()
    x = b.input("x", (2, 4, 5, 6))
    y = _centered(b, x, (2, 3))
    g = b.outputs(b.op("Mul", y, b.const(np.full((2, 1, 1, 1), 2.0, np.float32))))  # per batch
    check_pass(g, Fusions(), modified=True, ops=["InstanceNormalization", "Mul"], **TOL)


# -- GroupNorm --------------------------------------------------------------------------------
def _group_norm(b: Builder, x: Value, groups: int, via: str) -> Value:
    r = b.op("Reshape", x, b.const(np.array([0, groups, -1], np.int64)))
    if via == "instance":
        s = b.const(rng.standard_normal(groups).astype(np.float32))
        bias = b.const(rng.standard_normal(groups).astype(np.float32))
        n = b.op("InstanceNormalization", r, s, bias, epsilon=1e-5)
    else:
        n = _centered(b, r, (2,))
    back = b.op("Reshape", n, b.const(np.array(x.shape, np.int64)))
    c = x.shape[1]
    y = b.op("Mul", back, b.const(rng.standard_normal((c, 1, 1)).astype(np.float32)))
    return b.op("Add", y, b.const(rng.standard_normal((c, 1, 1)).astype(np.float32)))


@pytest.mark.parametrize("via", ["instance", "decomposed"])
def test_group_norm(via: str) -> None:
    b = Builder()
    x = b.input("x", (2, 6, 4, 5))
    g = b.outputs(_group_norm(b, x, 3, via))
    check_pass(g, Fusions(), modified=True, ops=["GroupNormalization"], **TOL)
    assert g.nodes[0].attrs["num_groups"] == 3


def test_group_norm_refused_when_reshape_is_not_per_group() -> None:
    b = Builder()
    x = b.input("x", (2, 6, 4, 5))
    r = b.op("Reshape", x, b.const(np.array([4, 3, -1], np.int64)))  # mixes the batch
    s, bias = b.const(np.ones(3, np.float32)), b.const(np.zeros(3, np.float32))
    n = b.op("InstanceNormalization", r, s, bias)
    g = b.outputs(b.op("Reshape", n, b.const(np.array([2, 6, 4, 5], np.int64))))
    check_pass(g, Fusions(), modified=False, ops=op_types(g), **TOL)


# -- L2Norm -----------------------------------------------------------------------------------
def _l2(b: Builder, x: Value, norm: str, clamp: str, form: int, axis: int = 1) -> Value:
    axes = _axes(b, axis)
    if norm == "sum":
        n = b.op("Sqrt", b.op("ReduceSum", _sq(b, x, False), axes))
    elif norm == "l2":
        n = b.op("ReduceL2", x, axes)
    else:
        n = b.op("Sqrt", b.op("ReduceSumSquare", x, axes))
    eps = _k(b, 1e-12)
    if clamp == "max":
        n = b.op("Max", eps, n)
    elif clamp == "clip":
        n = b.op("Clip", n, eps)
    elif clamp == "expand":
        n = b.op("Expand", b.op("Clip", n, eps), b.const(np.array(x.shape, np.int64)))
    return _div(b, x, n, form)


@pytest.mark.parametrize("form", [0, 1])
@pytest.mark.parametrize("clamp", ["none", "max", "clip", "expand"])
@pytest.mark.parametrize("norm", ["sum", "l2", "sumsquare"])
def test_l2_norm(norm: str, clamp: str, form: int) -> None:
    b = Builder()
    x = b.input("x", (3, 5, 2))
    g = b.outputs(_l2(b, x, norm, clamp, form))
    check_pass(g, Fusions(), modified=True, ops=["LpNormalization"], **TOL)
    assert (g.nodes[0].attrs["axis"], g.nodes[0].attr("p")) == (1, 2)


def test_l2_norm_tf_form() -> None:
    b = Builder()
    x = b.input("x", (3, 5))
    s = b.op("ReduceSum", b.op("Mul", x, x), _axes(b, -1))
    den = b.op("Sqrt", b.op("Max", s, _k(b, 1e-12)))
    g = b.outputs(b.op("Mul", x, b.op("Reciprocal", den)))
    check_pass(g, Fusions(), modified=True, ops=["LpNormalization"], **TOL)
    assert g.nodes[0].attrs["axis"] == 1


def test_l2_refusals() -> None:
    b = Builder()
    x = b.input("x", (3, 5, 2))
    n = b.op("ReduceL2", x, _axes(b, 1, 2))  # two axes
    g = b.outputs(b.op("Div", x, n))
    check_pass(g, Fusions(), modified=False, ops=op_types(g), **TOL)
    b = Builder()
    x = b.input("x", (3, 5))
    n = b.op("Max", b.op("ReduceL2", x, _axes(b, 1)), _k(b, 0.1))  # eps too large
    g = b.outputs(b.op("Div", x, n))
    check_pass(g, Fusions(), modified=False, ops=op_types(g), **TOL)


def test_spatial_affine_keeps_a_layer_norm_over_h_w() -> None:
    b = Builder()
    x = b.input("x", (2, 4, 5, 6))
    y = _centered(b, x, (2, 3))
    gamma = b.const(rng.standard_normal((5, 6)).astype(np.float32))
    g = b.outputs(b.op("Mul", y, gamma))
    check_pass(g, Fusions(), modified=True, ops=["LayerNormalization"], **TOL)
