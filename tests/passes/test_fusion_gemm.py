"""Gemm (alpha = beta = 1, transA = 0) -> MatMul / MatMulAct."""

from __future__ import annotations

import numpy as np
import pytest
from pass_testing import Builder, check_pass, op_types

from passes.base import PassContext
from passes.freeze import mark_trainable
from passes.fusions import Fusions
from passes.manager import PassManager
from passes.pipeline import build_pipeline

rng = np.random.default_rng(0)
TOL = {"rtol": 1e-5, "atol": 1e-5}


def _f32(*shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("c_shape", [(5,), (1, 5), (1,), None])
@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_becomes_matmul(trans_b: int, c_shape: tuple[int, ...] | None) -> None:
    b = Builder()
    a = b.input("a", (3, 4))
    w = b.const(_f32(5, 4) if trans_b else _f32(4, 5), "w")
    c = None if c_shape is None else b.const(_f32(*c_shape))
    g = b.outputs(b.op("Gemm", a, w, c, transB=trans_b))
    want = "MatMul" if c is None else "MatMulAct"
    check_pass(g, Fusions(), modified=True, ops=[want], **TOL)
    node = g.nodes[0]
    assert node.input(1).shape == (4, 5)
    if not trans_b:
        assert node.input(1).name == "w"  # the weight itself, not a copy


def test_non_constant_b_without_transpose() -> None:
    b = Builder()
    a, w = b.input("a", (3, 4)), b.input("w", (4, 5))
    g = b.outputs(b.op("Gemm", a, w, b.const(_f32(5))))
    check_pass(g, Fusions(), modified=True, ops=["MatMulAct"], **TOL)


def test_then_activation_fuses_in_the_pipeline() -> None:
    b = Builder()
    a = b.input("a", (3, 4))
    y = b.op("Gemm", a, b.const(_f32(5, 4)), b.const(_f32(5)), transB=1)
    g = b.outputs(b.op("Relu", y))
    PassManager(build_pipeline("full", PassContext())).run(g)
    assert op_types(g) == ["MatMulAct"] and g.nodes[0].attrs["activation"] == "Relu"


@pytest.mark.parametrize(
    "attrs, c_shape, b_input",
    [
        ({"alpha": 2.0}, (5,), False),
        ({"beta": 0.5}, (5,), False),
        ({"transA": 1}, (5,), False),
        ({}, (3, 5), False),  # C over both axes
        ({"transB": 1}, (5,), True),  # transposing a non-constant B
    ],
)
def test_refusals(attrs: dict, c_shape: tuple[int, ...], b_input: bool) -> None:
    b = Builder()
    a = b.input("a", (4, 3) if attrs.get("transA") else (3, 4))
    shape = (5, 4) if attrs.get("transB") else (4, 5)
    w = b.input("w", shape) if b_input else b.const(_f32(*shape))
    g = b.outputs(b.op("Gemm", a, w, b.const(_f32(*c_shape)), **attrs))
    check_pass(g, Fusions(), modified=False, ops=op_types(g), **TOL)


def test_trainable_weight_is_not_transposed() -> None:
    b = Builder()
    a = b.input("a", (3, 4))
    w = b.const(_f32(5, 4), "w")
    g = b.outputs(b.op("Gemm", a, w, b.const(_f32(5), "bias"), transB=1))
    mark_trainable(g, ["w"])
    check_pass(g, Fusions(), modified=False, ops=["Gemm"], **TOL)
    b = Builder()
    a = b.input("a", (3, 4))
    w = b.const(_f32(4, 5), "w")
    g = b.outputs(b.op("Gemm", a, w, b.const(_f32(5), "bias")))
    mark_trainable(g, ["w"])
    check_pass(g, Fusions(), modified=True, ops=["MatMulAct"], **TOL)
    assert g.nodes[0].input(1) is w  # kept as it is: nothing baked
