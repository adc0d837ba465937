"""UNIDIRECTIONAL_SEQUENCE_LSTM -> the IR's (ONNX) LSTM.

TFLite inputs: 0 input; 1-4 input-to-{input, forget, cell, output} weights [H, I];
5-8 recurrent-to-{i, f, c, o} weights [H, H]; 9-11 peepholes cell-to-{i, f, o} [H];
12-15 gate biases {i, f, c, o} [H]; 16-17 projection weights/bias; 18 output state and
19 cell state (variable tensors: their initial values); 20-23 layer-norm coefficients.

ONNX LSTM stacks the gates i, o, f, c: W [1, 4H, I], R [1, 4H, H], B [1, 8H] (input
then recurrent bias; TFLite has one bias, the recurrent half is zero), P [1, 3H] as
i, o, f. ``time_major`` selects ``layout`` 0 ([T, B, I]) or 1 ([B, T, I]); the Y
output [T, 1, B, H] / [B, T, 1, H] loses its direction axis through a Squeeze.
A coupled input-forget gate (no input-gate weights, CIFG) maps to ``input_forget=1``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ir import Value
from parsers.tflite.lower import ACT_TANH, LoweringError, OpContext

__all__ = ["LOWERINGS"]

# TFLite gate index (i, f, c, o) of each ONNX gate slot (i, o, f, c)
_ONNX_ORDER = (0, 3, 1, 2)


def _f32(ctx: OpContext, i: int) -> np.ndarray | None:
    if not ctx.has(i):
        return None
    arr = ctx.fconst(i)
    if arr is None:
        raise LoweringError(f"LSTM parameter {i} must be a constant")
    return np.asarray(arr, np.float32)


def unidirectional_sequence_lstm(ctx: OpContext) -> None:
    o = ctx.opts
    if any(ctx.has(i) for i in (16, 17)):
        raise LoweringError("LSTM projection is not supported")
    if any(ctx.has(i) for i in range(20, min(ctx.num_inputs, 24))):
        raise LoweringError("layer-normalized LSTM is not supported")
    cell_clip = float(o.CellClip()) if o is not None else 0.0
    if o is not None and o.ProjClip():
        raise LoweringError("projection clipping is not supported")
    act = int(o.FusedActivationFunction()) if o is not None else ACT_TANH
    if act != ACT_TANH:
        raise LoweringError(f"LSTM activation {act} is not supported (only TANH)")
    time_major = bool(o.TimeMajor()) if o is not None else True
    cifg = not ctx.has(1)
    w_in = [_f32(ctx, 1 + g) for g in range(4)]
    w_rec = [_f32(ctx, 5 + g) for g in range(4)]
    bias = [_f32(ctx, 12 + g) for g in range(4)]
    hidden = int(w_rec[3].shape[0]) if w_rec[3] is not None else 0
    n_in = int(w_in[3].shape[1]) if w_in[3] is not None else 0
    if cifg:
        w_in[0] = np.zeros((hidden, n_in), np.float32)
        w_rec[0] = np.zeros((hidden, hidden), np.float32)
        bias[0] = np.zeros(hidden, np.float32)
    if any(a is None for a in (*w_in, *w_rec)):
        raise LoweringError("LSTM weights are missing")
    bias = [b if b is not None else np.zeros(hidden, np.float32) for b in bias]
    W = np.concatenate([w_in[g] for g in _ONNX_ORDER])[None]  # noqa: N806
    R = np.concatenate([w_rec[g] for g in _ONNX_ORDER])[None]  # noqa: N806
    B = np.concatenate([*(bias[g] for g in _ONNX_ORDER), np.zeros(4 * hidden, np.float32)])  # noqa: N806, E501
    peep = [_f32(ctx, 9 + k) for k in range(3)]  # i, f, o
    P = None  # noqa: N806
    if any(p is not None for p in peep):
        zeros = np.zeros(hidden, np.float32)
        p_i, p_f, p_o = (p if p is not None else zeros for p in peep)
        P = ctx.constant(np.concatenate([p_i, p_o, p_f])[None], f"{ctx.name}_P")  # noqa: N806
    layout = 0 if time_major else 1
    if cell_clip > 0 and not _clip_inactive(ctx, cell_clip, time_major):
        _unrolled(ctx, W[0], R[0], B[: 4 * hidden], P, cell_clip, time_major, cifg)
        return
    h0 = _state(ctx, 18, layout)
    c0 = _state(ctx, 19, layout)
    attrs = {"hidden_size": hidden, "layout": layout, "input_forget": int(cifg)}
    ins = [ctx.input(0), ctx.constant(W, f"{ctx.name}_W"), ctx.constant(R, f"{ctx.name}_R"),
           ctx.constant(B[None], f"{ctx.name}_B"), None, h0, c0, P]  # fmt: skip
    y = ctx.emit("LSTM", ins, attrs, outputs=1)[0]
    axis = 1 if layout == 0 else 2
    ctx.emit("Squeeze", [y, ctx.ints([axis], "axes")], outputs=[ctx.out(0)])


def _clip_inactive(ctx: OpContext, clip: float, time_major: bool) -> bool:
    """True when |c| provably stays within ``clip``: |c_t| <= |c_0| + t, as
    c_t = f * c_{t-1} + i * g with f, i in (0, 1) and g in (-1, 1)."""
    shape = ctx.static_shape(0)
    c0 = ctx.fconst(19) if ctx.has(19) else np.zeros(1, np.float32)
    if shape is None or c0 is None:
        return False
    steps = shape[0 if time_major else 1]
    return float(np.max(np.abs(c0), initial=0.0)) + steps <= clip


def _unrolled(
    ctx: OpContext, W: np.ndarray, R: np.ndarray, B: np.ndarray,  # noqa: N803
    P: Value | None, clip: float, time_major: bool, cifg: bool,  # noqa: N803
) -> None:
    """The LSTM step by step with TFLite's cell clipping (gates in ONNX order i, o, f, c)."""
    if P is not None:
        raise LoweringError("cell clipping together with peepholes is not supported")
    shape = ctx.static_shape(0)
    if shape is None:
        raise LoweringError("cell clipping needs a static input shape")
    hidden = R.shape[1]
    t_axis = 0 if time_major else 1
    x = ctx.input(0)
    wt = ctx.constant(np.ascontiguousarray(W.T), f"{ctx.name}_Wt")
    rt = ctx.constant(np.ascontiguousarray(R.T), f"{ctx.name}_Rt")
    b = ctx.constant(B, f"{ctx.name}_bias")
    lo, hi = ctx.scalar(-clip, x, "clip_lo"), ctx.scalar(clip, x, "clip_hi")
    h = _state_2d(ctx, 18, shape[1 - t_axis], hidden)
    c = _state_2d(ctx, 19, shape[1 - t_axis], hidden)
    one = ctx.scalar(1.0, x, "one")
    outs = []
    for t in range(shape[t_axis]):
        xt = ctx.one("Gather", [x, ctx.constant(np.asarray(t, np.int64), f"{ctx.name}_t")],
                     {"axis": t_axis})
        z = ctx.one("Add", [ctx.one("MatMul", [xt, wt]), ctx.one("MatMul", [h, rt])])
        gi, go, gf, gc = ctx.emit("Split", [ctx.one("Add", [z, b])],
                                  {"axis": 1, "num_outputs": 4}, outputs=4)
        f = ctx.one("Sigmoid", [gf])
        i = ctx.one("Sub", [one, f]) if cifg else ctx.one("Sigmoid", [gi])
        c = ctx.one("Add", [ctx.one("Mul", [f, c]),
                            ctx.one("Mul", [i, ctx.one("Tanh", [gc])])])
        c = ctx.one("Clip", [c, lo, hi])
        h = ctx.one("Mul", [ctx.one("Sigmoid", [go]), ctx.one("Tanh", [c])])
        outs.append(ctx.one("Unsqueeze", [h, ctx.ints([t_axis], "time_axis")]))
    ctx.emit("Concat", outs, {"axis": t_axis}, outputs=[ctx.out(0)])


def _state_2d(ctx: OpContext, i: int, batch: int, hidden: int) -> Value:
    if ctx.has(i) and ctx.fconst(i) is None:
        return ctx.input(i)  # type: ignore[return-value]
    arr = ctx.fconst(i) if ctx.has(i) else None
    if arr is None:
        arr = np.zeros((batch, hidden), np.float32)
    return ctx.constant(np.asarray(arr, np.float32).reshape(batch, hidden), f"{ctx.name}_s{i}")


def _state(ctx: OpContext, i: int, layout: int) -> Value | None:
    """Initial state [B, H] -> [1, B, H] (layout 0) or [B, 1, H] (layout 1)."""
    if not ctx.has(i):
        return None
    arr = ctx.fconst(i)
    if arr is not None and not np.any(arr):
        return None  # zeros: the LSTM default
    v = ctx.input(i)
    assert v is not None
    return ctx.one("Unsqueeze", [v, ctx.ints([0 if layout == 0 else 1], "state_axis")])


LOWERINGS: dict[str, Callable[[OpContext], None]] = {
    "UNIDIRECTIONAL_SEQUENCE_LSTM": unidirectional_sequence_lstm,
}
