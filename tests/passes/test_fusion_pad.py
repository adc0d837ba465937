"""Zero Pad + Conv / ConvAct -> the conv's pads."""

from __future__ import annotations

import numpy as np
import pytest
from pass_testing import Builder, check_pass, op_types

from ir import Graph
from passes.fusions import Fusions

rng = np.random.default_rng(0)
TOL = {"rtol": 1e-5, "atol": 1e-5}


def _w(cout: int = 4, cin: int = 3) -> np.ndarray:
    return rng.standard_normal((cout, cin, 3, 3)).astype(np.float32)


def _graph(fmt: str, pads: list[int], conv_pads: list[int] | None = None, act: bool = False,
           value: float | None = None, axes: list[int] | None = None, mode: str = "constant",
           strides: tuple[int, int] = (2, 2)) -> Graph:  # fmt: skip
    b = Builder()
    x = b.input("x", (1, 3, 7, 8) if fmt == "NCHW" else (1, 7, 8, 3))
    extra = [None if value is None else b.const(np.array(value, np.float32))]
    if axes is not None:
        extra.append(b.const(np.array(axes, np.int64)))
    p = b.op("Pad", x, b.const(np.array(pads, np.int64)), *extra, mode=mode)
    attrs: dict = {"kernel_shape": [3, 3], "strides": list(strides), "format": fmt}
    if conv_pads is not None:
        attrs["pads"] = conv_pads
    if act:
        attrs["activation"] = "Relu"
    y = b.op("ConvAct" if act else "Conv", p, b.const(_w()), b.const(np.ones(4, np.float32)),
             **attrs)  # fmt: skip
    return b.outputs(y)


@pytest.mark.parametrize("act", [False, True])
@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
def test_pad_merges_into_conv(fmt: str, act: bool) -> None:
    # asymmetric "same" padding: 0 top/left, 1 bottom/right (TF style), plus conv pads
    spatial = [2, 3] if fmt == "NCHW" else [1, 2]
    pads = [0] * 8
    pads[spatial[1]] = 2  # W begin
    pads[4 + spatial[0]], pads[4 + spatial[1]] = 1, 1  # H end, W end
    g = _graph(fmt, pads, conv_pads=[1, 0, 0, 1], act=act)
    check_pass(g, Fusions(), modified=True, ops=["ConvAct" if act else "Conv"], **TOL)
    assert g.nodes[0].attrs["pads"] == [1, 2, 1, 2]


def test_value_zero_and_axes_input() -> None:
    g = _graph("NCHW", [1, 2, 0, 1], value=0.0, axes=[-2, 3])
    check_pass(g, Fusions(), modified=True, ops=["Conv"], **TOL)
    assert g.nodes[0].attrs["pads"] == [1, 2, 0, 1]


@pytest.mark.parametrize(
    "kw",
    [
        {"pads": [0, 0, 1, 1, 0, 0, 1, 1], "value": 1.0},  # non-zero value
        {"pads": [0, 0, 1, 1, 0, 0, 1, 1], "mode": "reflect"},
        {"pads": [1, 0, 1, 1, 0, 0, 1, 1]},  # pads the batch axis
        {"pads": [0, 0, 1, -1, 0, 0, 1, 1]},  # crops
    ],
)
def test_refusals(kw: dict) -> None:
    g = _graph("NCHW", **kw)
    check_pass(g, Fusions(), modified=False, ops=op_types(g), **TOL)


def test_refused_with_auto_pad_or_shared_pad() -> None:
    b = Builder()
    x = b.input("x", (1, 3, 6, 6))
    p = b.op("Pad", x, b.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)))
    y = b.op("Conv", p, b.const(_w()), kernel_shape=[3, 3], auto_pad="SAME_UPPER")
    g = b.outputs(y)
    check_pass(g, Fusions(), modified=False, ops=op_types(g), **TOL)
    b = Builder()
    x = b.input("x", (1, 3, 6, 6))
    p = b.op("Pad", x, b.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)))
    g = b.outputs(b.op("Conv", p, b.const(_w()), kernel_shape=[3, 3]), p)
    check_pass(g, Fusions(), modified=False, ops=op_types(g), **TOL)
