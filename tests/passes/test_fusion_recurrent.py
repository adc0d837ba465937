"""Unrolled LSTM cells -> one LSTM node; ONNX LSTM models stay whole."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from pass_testing import Builder, check_pass, op_types, random_feeds

import converter
from benchmarks import models as M
from converter.executor.runtime import Runtime
from ir import Graph, Value
from passes.base import PassContext
from passes.fusions.recurrent import FuseRecurrent
from passes.manager import PassManager
from passes.pipeline import build_pipeline

TOL = {"rtol": 1e-4, "atol": 1e-5}
T, N, IN, H = 4, 2, 3, 5  # steps, batch, input size, hidden size


def _weights(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    wx = (0.5 * rng.standard_normal((IN, 4 * H))).astype(np.float32)
    rh = (0.5 * rng.standard_normal((H, 4 * H))).astype(np.float32)
    return wx, rh, (0.5 * rng.standard_normal(4 * H)).astype(np.float32)


def unrolled_lstm(
    b: Builder,
    x: Value,
    *,
    form: str = "matmul",
    order: str = "iofc",
    axis: int = 0,
    h0: Value | None = None,
    c0: Value | None = None,
    steps: int = T,
    clip: float | None = None,
    stack: bool = True,
    vary: bool = False,
) -> tuple[Value | None, Value, Value]:
    """One cell per step; ``form``: matmul (TFLite lowering), gemm (torch LSTMCell),
    concat (TF BasicLSTMCell), folded (zero h0: step 0 has no recurrent term)."""
    wx, rh, bias = _weights()
    h = h0 if h0 is not None else b.const(np.zeros((N, H), np.float32))
    c = c0 if c0 is not None else b.const(np.zeros((N, H), np.float32))
    wx_v, rh_v, b_v = b.const(wx), b.const(rh), b.const(bias)
    outs = []
    for t in range(steps):
        xt = b.op("Gather", x, b.const(np.array(t, np.int64)), axis=axis)
        if vary and t == steps - 1:
            wx_v = b.const(wx * 1.5)
        if form == "gemm":
            g = b.op("Add", b.op("Gemm", xt, b.const(wx.T.copy()), b.const(bias), transB=1),
                     b.op("Gemm", h, b.const(rh.T.copy()), transB=1))  # fmt: skip
        elif form == "concat":
            w = b.const(np.concatenate([wx, rh]))
            g = b.op("Add", b.op("MatMul", b.op("Concat", xt, h, axis=1), w), b_v)
        elif form == "folded" and t == 0:
            g = b.op("Add", b.op("MatMul", xt, wx_v), b_v)
        else:
            g = b.op("Add", b.op("Add", b.op("MatMul", xt, wx_v), b.op("MatMul", h, rh_v)), b_v)
        parts = dict(zip(order, b.op("Split", g, axis=1, num_outputs=4, outputs=4), strict=True))
        f = b.op("Sigmoid", parts["f"])
        c = b.op("Add", b.op("Mul", c, f), b.op("Mul", b.op("Tanh", parts["c"]),
                                                  b.op("Sigmoid", parts["i"])))  # fmt: skip
        if clip is not None:
            c = b.op("Clip", c, b.const(np.float32(-clip)), b.const(np.float32(clip)))
        h = b.op("Mul", b.op("Tanh", c), b.op("Sigmoid", parts["o"]))
        if stack:
            outs.append(b.op("Unsqueeze", h, b.const(np.array([axis], np.int64))))
    y = b.op("Concat", *outs, axis=axis) if stack else None
    return y, h, c


def _x(b: Builder, axis: int = 0) -> Value:
    return b.input("x", (T, N, IN) if axis == 0 else (N, T, IN))


@pytest.mark.parametrize("form", ["matmul", "gemm", "concat", "folded"])
@pytest.mark.parametrize("order", ["iofc", "ifco"])
def test_unrolled_lstm_becomes_one_node(form: str, order: str) -> None:
    b = Builder()
    y, _, _ = unrolled_lstm(b, _x(b), form=form, order=order)
    g = b.outputs(y)
    check_pass(g, FuseRecurrent(), modified=True, ops=["LSTM", "Squeeze", "Gather"] * 1
               + ["Gather"] * (T - 1), **TOL)  # fmt: skip
    lstm = next(n for n in g.nodes if n.op == "LSTM")
    assert lstm.attrs == {"hidden_size": H, "layout": 0}
    assert lstm.input(1).shape == (1, 4 * H, IN) and lstm.input(5) is None


@pytest.mark.parametrize("axis", [0, 1])
def test_states_and_last_outputs(axis: int) -> None:
    b = Builder()
    h0, c0 = b.input("h0", (N, H)), b.input("c0", (N, H))
    y, h, c = unrolled_lstm(b, _x(b, axis), axis=axis, h0=h0, c0=c0, form="gemm")
    g = b.outputs(y, h, c)
    check_pass(g, FuseRecurrent(), modified=True, **TOL)
    ops = op_types(g)
    assert ops.count("LSTM") == 1 and ops.count("Squeeze") == 3 and ops.count("Unsqueeze") == 2
    assert "Sigmoid" not in ops and "Split" not in ops
    assert next(n for n in g.nodes if n.op == "LSTM").attrs["layout"] == axis


def test_last_state_only() -> None:
    b = Builder()
    _, h, _ = unrolled_lstm(b, _x(b), stack=False)
    g = b.outputs(b.op("Relu", h))
    check_pass(g, FuseRecurrent(), modified=True, **TOL)
    assert {"LSTM", "Squeeze", "Relu"} <= set(op_types(g)) and "Concat" not in op_types(g)


def _refused(g: Graph) -> None:
    check_pass(g, FuseRecurrent(), modified=False, ops=op_types(g), **TOL)


def test_refusals() -> None:
    b = Builder()  # TFLite's cell clipping: not ONNX LSTM's (gate) clip
    y, _, _ = unrolled_lstm(b, _x(b), clip=0.5)
    _refused(b.outputs(y))
    b = Builder()  # another weight at the last step
    y, _, _ = unrolled_lstm(b, _x(b), vary=True)
    _refused(b.outputs(y))
    b = Builder()  # fewer steps than the time axis
    y, _, _ = unrolled_lstm(b, _x(b), steps=T - 1)
    _refused(b.outputs(y))
    for kind in ("c_output", "h_read"):  # the first step's state escapes
        b = Builder()
        y, _, _ = unrolled_lstm(b, _x(b))
        if kind == "c_output":
            c1 = next(
                n
                for n in b.graph.nodes
                if n.op == "Add"
                and all(v.producer is not None and v.producer.op == "Mul" for v in n.inputs)
            )
            _refused(b.outputs(y, c1.outputs[0]))
        else:
            h1 = next(n for n in b.graph.nodes if n.op == "Unsqueeze").inputs[0]
            _refused(b.outputs(y, b.op("Relu", h1)))


def test_gate_read_elsewhere_is_refused() -> None:
    b = Builder()
    y, h, _ = unrolled_lstm(b, _x(b))
    sig = next(n for n in b.graph.nodes if n.op == "Sigmoid").outputs[0]
    _refused(b.outputs(y, b.op("Relu", sig)))


def test_default_pipeline_fuses_after_folding() -> None:
    b = Builder()
    y, h, _ = unrolled_lstm(b, _x(b))  # zero states: step 0's h0 @ R folds away
    g = b.outputs(y, h)
    pm = PassManager(build_pipeline("general", PassContext()))
    feeds = random_feeds(g)
    before = Runtime(g).run(feeds)
    pm.run(g)
    assert g.count_ops() == {"LSTM": 1, "Squeeze": 2}
    after = Runtime(g).run(feeds)
    for name, want in before.items():
        np.testing.assert_allclose(after[name], want, **TOL)


def test_onnx_lstm_stays_whole(tmp_path: Path) -> None:
    src = tmp_path / "lstm.onnx"
    onnx.save(M.lstm_tagger(), src)
    result = converter.convert(src, output=tmp_path / "l.ms", verify=True, disable_pass="rnn")
    assert result.verify is not None and result.verify.passed
    assert result.graph.count_ops()["LSTM"] == 1


# -- GRU ----------------------------------------------------------------------------------
def unrolled_gru(
    b: Builder,
    x: Value,
    *,
    form: str = "torch",
    update: str = "lerp",
    axis: int = 0,
    h0: Value | None = None,
    stack: bool = True,
) -> tuple[Value | None, Value]:
    """``form``: torch (GRUCell: Gemm, gates r z n) or keras (MatMul + bias Add, gates z r n,
    reset_after=True); ``update``: lerp ((1 - z) * n + z * h) or delta (n + z * (h - n))."""
    rng = np.random.default_rng(7)
    wx = (0.5 * rng.standard_normal((IN, 3 * H))).astype(np.float32)
    rh = (0.5 * rng.standard_normal((H, 3 * H))).astype(np.float32)
    bx, bh = (0.5 * rng.standard_normal((2, 3 * H))).astype(np.float32)
    h = h0 if h0 is not None else b.const(np.zeros((N, H), np.float32))
    order = "rzn" if form == "torch" else "zrn"
    outs = []
    for t in range(T):
        xt = b.op("Gather", x, b.const(np.array(t, np.int64)), axis=axis)
        if form == "torch":
            gx = b.op("Gemm", xt, b.const(wx.T.copy()), b.const(bx), transB=1)
            gh = b.op("Gemm", h, b.const(rh.T.copy()), b.const(bh), transB=1)
        else:
            gx = b.op("Add", b.op("MatMul", xt, b.const(wx)), b.const(bx))
            gh = b.op("Add", b.const(bh), b.op("MatMul", h, b.const(rh)))
        xs = dict(zip(order, b.op("Split", gx, axis=1, num_outputs=3, outputs=3), strict=True))
        hs = dict(zip(order, b.op("Split", gh, axis=-1, num_outputs=3, outputs=3), strict=True))
        r = b.op("Sigmoid", b.op("Add", xs["r"], hs["r"]))
        z = b.op("Sigmoid", b.op("Add", hs["z"], xs["z"]))
        n = b.op("Tanh", b.op("Add", xs["n"], b.op("Mul", r, hs["n"])))
        if update == "lerp":
            one = b.const(np.float32(1.0))
            h = b.op("Add", b.op("Mul", b.op("Sub", one, z), n), b.op("Mul", h, z))
        else:
            h = b.op("Add", n, b.op("Mul", z, b.op("Sub", h, n)))
        if stack:
            outs.append(b.op("Unsqueeze", h, b.const(np.array([axis], np.int64))))
    return (b.op("Concat", *outs, axis=axis) if stack else None), h


@pytest.mark.parametrize("form", ["torch", "keras"])
@pytest.mark.parametrize("update", ["lerp", "delta"])
def test_unrolled_gru_becomes_one_node(form: str, update: str) -> None:
    b = Builder()
    y, h = unrolled_gru(b, _x(b), form=form, update=update)
    g = b.outputs(y, h)
    check_pass(g, FuseRecurrent(), modified=True, ops=["GRU", "Squeeze", "Squeeze"]
               + ["Gather"] * T, **TOL)  # fmt: skip
    gru = next(n for n in g.nodes if n.op == "GRU")
    assert gru.attrs == {"hidden_size": H, "layout": 0, "linear_before_reset": 1}
    assert gru.input(5) is None  # zero initial state left out


@pytest.mark.parametrize("axis", [0, 1])
def test_gru_with_initial_state(axis: int) -> None:
    b = Builder()
    _, h = unrolled_gru(b, _x(b, axis), axis=axis, h0=b.input("h0", (N, H)), stack=False)
    g = b.outputs(h)
    check_pass(g, FuseRecurrent(), modified=True, **TOL)
    assert op_types(g).count("GRU") == 1 and "Sigmoid" not in op_types(g)


def test_gru_default_pipeline() -> None:
    b = Builder()
    y, _ = unrolled_gru(b, _x(b))  # zero h0: step 0's h-side Gemm folds into constants
    g = b.outputs(y)
    feeds = random_feeds(g)
    before = Runtime(g).run(feeds)
    PassManager(build_pipeline("general", PassContext())).run(g)
    assert g.count_ops() == {"GRU": 1, "Squeeze": 1}
    np.testing.assert_allclose(Runtime(g).run(feeds)[g.outputs[0].name],
                               before[g.outputs[0].name], **TOL)  # fmt: skip


def test_gru_reset_before_linear_is_refused() -> None:
    """ONNX GRU's default (reset applied before R: (r * h) @ Rn) is another cell."""
    rng = np.random.default_rng(8)
    b = Builder()
    x = _x(b)
    h = b.input("h0", (N, H))
    wx = b.const((0.5 * rng.standard_normal((IN, 3 * H))).astype(np.float32))
    rzr = b.const((0.5 * rng.standard_normal((H, 2 * H))).astype(np.float32))
    rn = b.const((0.5 * rng.standard_normal((H, H))).astype(np.float32))
    for t in range(T):
        xt = b.op("Gather", x, b.const(np.array(t, np.int64)), axis=0)
        xz, xr, xn = b.op("Split", b.op("MatMul", xt, wx), axis=1, num_outputs=3, outputs=3)
        hz, hr = b.op("Split", b.op("MatMul", h, rzr), axis=1, num_outputs=2, outputs=2)
        z = b.op("Sigmoid", b.op("Add", xz, hz))
        r = b.op("Sigmoid", b.op("Add", xr, hr))
        n = b.op("Tanh", b.op("Add", xn, b.op("MatMul", b.op("Mul", r, h), rn)))
        h = b.op("Add", n, b.op("Mul", z, b.op("Sub", h, n)))
    _refused(b.outputs(h))
