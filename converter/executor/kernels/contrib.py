"""NumPy kernels of the com.microsoft ops (semantics in ``ir/ops/contrib.py``).

Float ops compute in float32 (float16 / bfloat16 inputs are widened and the results cast
back). Quantized ops follow onnxruntime's CPU kernels: element-wise ones dequantize to
float32, compute, and quantize with round-half-to-even (``kernels.quant.quantize``);
integer matmuls accumulate exactly and scale ``float32(acc) * (a_scale * b_scale)``.
Convolutions and the LSTM reuse the float kernels of ``kernels.nn``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import ml_dtypes
import numpy as np

from converter.executor.kernels.nn import KERNELS as NN_KERNELS
from converter.executor.kernels.quant import (
    dequantize,
    dynamic_params,
    int_matmul,
    quantize,
    requantize,
)
from converter.executor.registry import KernelContext, UnsupportedKernel

__all__ = ["KERNELS"]

Array = np.ndarray
_LOW = frozenset({np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)})


def _work(x: Array) -> Array:
    return x.astype(np.float32) if x.dtype in _LOW else x


def _float_only(op: str, x: Array) -> None:
    if x.dtype.kind != "f" and x.dtype not in _LOW:
        raise UnsupportedKernel(f"{op}: dtype {x.dtype} not supported")


def _scalar(p: Array | None) -> Array | None:
    return None if p is None else np.asarray(p).reshape(())


# --------------------------------------------------------------------------- float ops


def _fused_operand(x: Array, trans_batch: int, trans: int) -> Array:
    if trans_batch and x.ndim > 2:
        x = np.moveaxis(x, 0, -2)
    if trans and x.ndim >= 2:
        x = np.swapaxes(x, -1, -2)
    return x


def _fused_matmul(ctx: KernelContext, a: Array, b: Array) -> Array:
    _float_only("FusedMatMul", a)
    aa = _fused_operand(_work(a), ctx.attr("transBatchA"), ctx.attr("transA"))
    bb = _fused_operand(_work(b), ctx.attr("transBatchB"), ctx.attr("transB"))
    y = np.matmul(aa, bb)
    alpha = ctx.attr("alpha")
    if alpha != 1.0:
        y = y * y.dtype.type(alpha)
    return y.astype(a.dtype, copy=False)


def _clip_params(p: list[float]) -> tuple[float, float]:
    return (p[0] if p else -np.inf), (p[1] if len(p) > 1 else np.inf)


_ACTIVATIONS: Mapping[str, Callable[[Array, list[float]], Array]] = {
    "Relu": lambda v, p: np.maximum(v, 0),
    "Tanh": lambda v, p: np.tanh(v),
    "Sigmoid": lambda v, p: 1 / (1 + np.exp(-v)),
    "LeakyRelu": lambda v, p: np.where(v >= 0, v, v * (p[0] if p else 0.01)),
    "Clip": lambda v, p: np.clip(v, *_clip_params(p)),
    "HardSigmoid": lambda v, p: np.clip(
        v * (p[0] if p else 0.2) + (p[1] if len(p) > 1 else 0.5), 0, 1
    ),
}


def _fused_conv(
    ctx: KernelContext, x: Array, w: Array, b: Array | None = None, z: Array | None = None
) -> Array:
    y = _work(NN_KERNELS["Conv"](ctx, x, w, b))
    if z is not None:
        y = y + _work(z)
    name = ctx.attr("activation")
    if name:
        if name not in _ACTIVATIONS:
            raise UnsupportedKernel(f"FusedConv: activation {name!r} not supported")
        params = [float(v) for v in ctx.attr("activation_params") or []]
        with np.errstate(over="ignore"):
            y = _ACTIVATIONS[name](y, params)
    return y.astype(x.dtype, copy=False)


def _skip_sum(x: Array, skip: Array, bias: Array | None) -> Array:
    s = _work(x) + _work(skip)
    return s if bias is None else s + _work(bias)


def _skip_outputs(
    ctx: KernelContext, x: Array, y: Array, mean: Array, inv: Array, s: Array
) -> Array | tuple[Array, ...]:
    outs = (y.astype(x.dtype), mean.astype(np.float32), inv.astype(np.float32),
            s.astype(x.dtype))
    return outs[0] if ctx.num_outputs == 1 else outs[: ctx.num_outputs]


def _skip_layer_norm(
    ctx: KernelContext, x: Array, skip: Array, gamma: Array, beta: Array | None = None,
    bias: Array | None = None,
) -> Array | tuple[Array, ...]:
    _float_only("SkipLayerNormalization", x)
    s = _skip_sum(x, skip, bias)
    mean = s.mean(axis=-1, keepdims=True)
    var = np.square(s - mean).mean(axis=-1, keepdims=True)
    inv = 1 / np.sqrt(var + np.float32(ctx.attr("epsilon")))
    y = (s - mean) * inv * _work(gamma)
    if beta is not None:
        y = y + _work(beta)
    return _skip_outputs(ctx, x, y, mean, inv, s)


def _rms(s: Array, axes: tuple[int, ...], eps: float) -> Array:
    return 1 / np.sqrt(np.square(s).mean(axis=axes, keepdims=True) + np.float32(eps))


def _skip_simplified_norm(
    ctx: KernelContext, x: Array, skip: Array, gamma: Array, bias: Array | None = None
) -> Array | tuple[Array, ...]:
    _float_only("SkipSimplifiedLayerNormalization", x)
    s = _skip_sum(x, skip, bias)
    inv = _rms(s, (-1,), ctx.attr("epsilon"))
    y = s * inv * _work(gamma)
    return _skip_outputs(ctx, x, y, np.zeros_like(inv), inv, s)


def _simplified_norm(
    ctx: KernelContext, x: Array, scale: Array
) -> Array | tuple[Array, ...]:
    _float_only("SimplifiedLayerNormalization", x)
    axis = ctx.attr("axis") % x.ndim
    xs = x.astype(np.float32) if ctx.attr("stash_type") == 1 else _work(x)
    inv = _rms(xs, tuple(range(axis, x.ndim)), ctx.attr("epsilon"))
    y = (xs * inv).astype(x.dtype).astype(np.float32) * _work(scale)
    y = y.astype(x.dtype)
    if ctx.num_outputs == 1:
        return y
    stash = np.float32 if ctx.attr("stash_type") == 1 else x.dtype
    return y, inv.astype(stash)


def _bias_softmax(ctx: KernelContext, data: Array, bias: Array) -> Array:
    _float_only("BiasSoftmax", data)
    axis = ctx.attr("axis") % data.ndim
    b = _work(bias)
    if b.ndim < data.ndim and ctx.attr("is_inner_broadcast"):
        lead = b.ndim - (data.ndim - axis)
        b = b.reshape(*b.shape[:lead], *([1] * (data.ndim - b.ndim)), *b.shape[lead:])
    v = _work(data) + b
    axes = tuple(range(axis, data.ndim))
    e = np.exp(v - v.max(axis=axes, keepdims=True))
    return (e / e.sum(axis=axes, keepdims=True)).astype(data.dtype)


# --------------------------------------------------------------------------- int matmuls


def _col(p: Array | None) -> Array | None:
    """A scale / zero point of B: scalar or per column (last axis)."""
    if p is None or p.size == 1:
        return _scalar(p)
    return p


def _int_to_float(
    acc: Array, a_scale: Array, b_scale: Array, bias: Array | None, dtype: np.dtype
) -> Array:
    mult = a_scale.reshape(()).astype(np.float32) * _col(b_scale).astype(np.float32)  # type: ignore[union-attr]
    y = acc.astype(np.float32) * mult
    if bias is not None:
        y = y + _work(bias)
    return y.astype(dtype, copy=False)


def _dynamic_quantize_matmul(
    ctx: KernelContext, a: Array, b: Array, b_scale: Array, b_zp: Array | None = None,
    bias: Array | None = None,
) -> Array:
    _float_only("DynamicQuantizeMatMul", a)
    scale, zp = dynamic_params(a)
    aq = quantize(a.astype(np.float32) / scale, np.asarray(zp), np.dtype(np.uint8))
    acc = int_matmul(aq, b, np.asarray(zp), _col(b_zp))
    return _int_to_float(acc, np.asarray(scale), b_scale, bias, np.dtype(np.float32))


def _matmul_integer_to_float(
    ctx: KernelContext, a: Array, b: Array, a_scale: Array, b_scale: Array,
    a_zp: Array | None = None, b_zp: Array | None = None, bias: Array | None = None,
) -> Array:
    acc = int_matmul(a, b, _scalar(a_zp), _col(b_zp))
    return _int_to_float(acc, a_scale, b_scale, bias, a_scale.dtype)


def _qgemm(
    ctx: KernelContext, a: Array, a_scale: Array, a_zp: Array, b: Array, b_scale: Array,
    b_zp: Array, c: Array | None = None, y_scale: Array | None = None,
    y_zp: Array | None = None,
) -> Array:
    aa = a.T if ctx.attr("transA") else a
    bb = b.T if ctx.attr("transB") else b
    acc = int_matmul(aa, bb, _scalar(a_zp), _col(b_zp))
    if c is not None:
        acc = acc + c.astype(np.int64)
    mult = (a_scale.reshape(()).astype(np.float32) * _col(b_scale).astype(np.float32)  # type: ignore[union-attr]
            * np.float32(ctx.attr("alpha")))
    if y_scale is None:
        return (acc.astype(np.float32) * mult).astype(np.float32)
    mult = mult / y_scale.reshape(()).astype(np.float32)
    out = y_zp.dtype if y_zp is not None else np.dtype(np.uint8)
    return requantize(acc, mult, _scalar(y_zp), out)


# --------------------------------------------------------------------------- qlinear elementwise


def _deq(x: Array, scale: Array, zp: Array | None) -> Array:
    return dequantize(x, _scalar(scale), _scalar(zp), np.dtype(np.float32))  # type: ignore[arg-type]


def _q(v: Array, scale: Array, zp: Array | None, like: Array) -> Array:
    out = zp.dtype if zp is not None else like.dtype
    return quantize(v / _scalar(scale).astype(np.float32), _scalar(zp), out)  # type: ignore[union-attr]


def _qlinear_add(
    ctx: KernelContext, a: Array, a_s: Array, a_zp: Array | None, b: Array, b_s: Array,
    b_zp: Array | None, c_s: Array, c_zp: Array | None = None,
) -> Array:
    cs = _scalar(c_s).astype(np.float32)  # type: ignore[union-attr]
    ra = _scalar(a_s).astype(np.float32) / cs  # type: ignore[union-attr]
    rb = _scalar(b_s).astype(np.float32) / cs  # type: ignore[union-attr]
    da = _deq(a, np.float32(1), a_zp) * ra
    db = _deq(b, np.float32(1), b_zp) * rb
    out = c_zp.dtype if c_zp is not None else a.dtype
    return quantize(da + db, _scalar(c_zp), out)


def _qlinear_mul(
    ctx: KernelContext, a: Array, a_s: Array, a_zp: Array | None, b: Array, b_s: Array,
    b_zp: Array | None, c_s: Array, c_zp: Array | None = None,
) -> Array:
    """As onnxruntime's x86 kernel: rint(float32(int product) * ratio + float32(c_zp))."""
    ratio = (_scalar(a_s).astype(np.float32) * _scalar(b_s).astype(np.float32)  # type: ignore[union-attr]
             / _scalar(c_s).astype(np.float32))  # type: ignore[union-attr]
    v = _deq(a, np.float32(1), a_zp) * _deq(b, np.float32(1), b_zp) * ratio
    out = c_zp.dtype if c_zp is not None else a.dtype
    if c_zp is not None:
        v = v + _scalar(c_zp).astype(np.float32)  # type: ignore[union-attr]
    return quantize(v, None, out)


def _lookup(
    x: Array, x_s: Array, x_zp: Array | None, y_s: Array, y_zp: Array | None,
    fn: Callable[[Array], Array],
) -> Array:
    """onnxruntime builds a 256-entry table: quantize(fn(dequantize(v))) per value."""
    if x.dtype not in (np.dtype(np.uint8), np.dtype(np.int8)):
        return _q(fn(_deq(x, x_s, x_zp)), y_s, y_zp, x)
    info = np.iinfo(x.dtype)
    values = np.arange(info.min, int(info.max) + 1).astype(x.dtype)
    table = _q(fn(_deq(values, x_s, x_zp)), y_s, y_zp, x)
    return table[x.astype(np.int64) - info.min]


def _qlinear_sigmoid(
    ctx: KernelContext, x: Array, x_s: Array, x_zp: Array | None, y_s: Array,
    y_zp: Array | None = None,
) -> Array:
    return _lookup(x, x_s, x_zp, y_s, y_zp, lambda v: 1 / (1 + np.exp(-v)))


def _qlinear_leaky_relu(
    ctx: KernelContext, x: Array, x_s: Array, x_zp: Array | None, y_s: Array,
    y_zp: Array | None = None,
) -> Array:
    alpha = np.float32(ctx.attr("alpha"))
    return _lookup(x, x_s, x_zp, y_s, y_zp, lambda v: np.where(v >= 0, v, v * alpha))


def _qlinear_gap(
    ctx: KernelContext, x: Array, x_s: Array, x_zp: Array, y_s: Array, y_zp: Array
) -> Array:
    nhwc = ctx.attr("format") == "NHWC"
    axes = tuple(range(1, x.ndim - 1)) if nhwc else tuple(range(2, x.ndim))
    size = math.prod(x.shape[a] for a in axes)
    acc = x.astype(np.int64).sum(axis=axes, keepdims=True) - int(_scalar(x_zp)) * size
    mult = _scalar(x_s).astype(np.float32) / (  # type: ignore[union-attr]
        _scalar(y_s).astype(np.float32) * np.float32(size))  # type: ignore[union-attr]
    return requantize(acc, mult, _scalar(y_zp), y_zp.dtype)


def _qlinear_concat(ctx: KernelContext, y_s: Array, y_zp: Array, *inputs: Array) -> Array:
    if len(inputs) % 3:
        raise ValueError("QLinearConcat: inputs must come in (tensor, scale, zero point) triples")
    parts = []
    for x, s, zp in zip(inputs[::3], inputs[1::3], inputs[2::3], strict=True):
        same = np.array_equal(s.reshape(()), y_s.reshape(())) and np.array_equal(
            _scalar(zp), _scalar(y_zp))
        parts.append(x if same else _lookup(x, s, zp, y_s, y_zp, lambda v: v))
    return np.concatenate([p.astype(y_zp.dtype, copy=False) for p in parts],
                          axis=ctx.attr("axis"))


# --------------------------------------------------------------------------- LSTM


class _LstmContext:
    """What the LSTM kernel reads from its context, with DynamicQuantizeLSTM's attributes."""

    def __init__(self, ctx: KernelContext) -> None:
        self.attrs = {**ctx.attrs, "layout": 0}
        self.num_outputs = ctx.num_outputs
        self.cache = ctx.cache
        self.node = _NodeView(ctx)

    def attr(self, name: str) -> Any:
        return self.attrs[name]


class _NodeView:
    def __init__(self, ctx: KernelContext) -> None:
        self.op = "LSTM"
        self.inputs = ctx.node.inputs
        self.outputs = ctx.node.outputs


def _dequantize_gates(q: Array, scale: Array, zp: Array) -> Array:
    """[dirs, in, 4H] int weights -> [dirs, 4H, in] float32 (ONNX LSTM layout)."""
    dirs = q.shape[0]
    shape = (dirs, 1, -1) if scale.size > dirs else (dirs, 1, 1)
    w = dequantize(q, scale.reshape(shape), zp.reshape(shape), np.dtype(np.float32))
    return np.ascontiguousarray(np.swapaxes(w, 1, 2))


def _dynamic_quantize_lstm(
    ctx: KernelContext, x: Array, w: Array, r: Array, b: Array | None, seq: Array | None,
    h0: Array | None, c0: Array | None, p: Array | None, w_s: Array, w_zp: Array,
    r_s: Array, r_zp: Array,
) -> Any:
    hit = ctx.cache.get("dq_lstm")
    key = (w, r, w_s, w_zp, r_s, r_zp)
    if hit is None or any(a is not k for a, k in zip(hit[0], key, strict=True)):
        hit = (key, _dequantize_gates(w, w_s, w_zp), _dequantize_gates(r, r_s, r_zp))
        ctx.cache["dq_lstm"] = hit
    return NN_KERNELS["LSTM"](_LstmContext(ctx), x, hit[1], hit[2], b, seq, h0, c0, p)


# --------------------------------------------------------------------------- attention


def _softmax_last(v: Array) -> Array:
    e = np.exp(v - v.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _heads(x: Array, n: int) -> Array:
    """[B, S, n * h] -> [B, n, S, h]."""
    b, s, hidden = x.shape
    return x.reshape(b, s, n, hidden // n).transpose(0, 2, 1, 3)


def _mask_bias(
    mask: Array | None, b: int, s: int, total: int, past: int, causal: bool, fill: float
) -> Array:
    """Additive [B, 1, S, T] mask: ``fill`` where a key is masked (onnxruntime's scheme)."""
    bias = np.zeros((b, 1, s, total), np.float32)
    if mask is not None:
        m = mask.astype(np.int64)
        keys = np.arange(total)
        if m.ndim == 1 and m.shape[0] == b:
            masked = keys[None, :] >= m[:, None]
        elif m.ndim == 1 and m.shape[0] == 2 * b:
            masked = (keys[None, :] >= m[:b, None]) | (keys[None, :] < m[b:, None])
        elif m.ndim == 2:
            masked = m == 0
        elif m.ndim == 3:
            masked = (m == 0)[:, None]
        else:
            raise UnsupportedKernel(f"attention: mask of shape {mask.shape} not supported")
        masked = masked.reshape(b, 1, -1, total) if masked.ndim == 2 else masked
        bias = bias + np.where(masked, np.float32(fill), np.float32(0))
    if causal:
        future = np.arange(total)[None, :] > (np.arange(s)[:, None] + past)
        bias = bias + np.where(future, np.float32(fill), np.float32(0))
    return bias


def _attend(
    q: Array, k: Array, v: Array, scale: float | None, bias: Array, extra: Array | None
) -> Array:
    """softmax(q k^T * scale + bias (+ extra)) v over heads: [B, N, S, h] -> [B, S, N*h]."""
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) * np.float32(scale) + bias
    if extra is not None:
        scores = scores + _work(extra)
    out = np.matmul(_softmax_last(scores), v)
    b, n, s, h = out.shape
    return out.transpose(0, 2, 1, 3).reshape(b, s, n * h)


def _attention(
    ctx: KernelContext, x: Array, weights: Array, bias: Array | None = None,
    mask: Array | None = None, past: Array | None = None, extra: Array | None = None,
    past_len: Array | None = None,
) -> Array | tuple[Array, Array]:
    _float_only("Attention", x)
    if ctx.attr("do_rotary") or ctx.attr("past_present_share_buffer"):
        raise UnsupportedKernel("Attention: rotary / shared past buffers not supported")
    n = ctx.attr("num_heads")
    sizes = ctx.attr("qkv_hidden_sizes") or [weights.shape[1] // 3] * 3
    proj = np.matmul(_work(x), _work(weights))
    if bias is not None:
        proj = proj + _work(bias)
    q, k, v = np.split(proj, [sizes[0], sizes[0] + sizes[1]], axis=-1)
    q, k, v = _heads(q, n), _heads(k, n), _heads(v, n)
    plen = 0
    if past is not None:
        plen = past.shape[3]
        k = np.concatenate([_work(past[0]), k], axis=2)
        v = np.concatenate([_work(past[1]), v], axis=2)
    bsz, s = x.shape[:2]
    mbias = _mask_bias(mask, bsz, s, k.shape[2], plen, bool(ctx.attr("unidirectional")),
                       ctx.attr("mask_filter_value"))
    y = _attend(q, k, v, ctx.attr("scale"), mbias, extra).astype(x.dtype)
    if ctx.num_outputs == 1:
        return y
    return y, np.stack([k, v]).astype(x.dtype)


def _mha_project(x: Array, bias: Array | None, n: int) -> Array:
    if x.ndim == 4:  # already [B, N, L, h]
        return _work(x)
    xw = _work(x)
    return _heads(xw if bias is None else xw + bias, n)


def _multi_head_attention(
    ctx: KernelContext, query: Array, key: Array | None = None, value: Array | None = None,
    bias: Array | None = None, mask: Array | None = None, extra: Array | None = None,
    past_key: Array | None = None, past_value: Array | None = None, *rest: Array | None,
) -> Array | tuple[Array, ...]:
    _float_only("MultiHeadAttention", query)
    if key is None or value is None or query.ndim != 3 or ctx.num_outputs > 3:
        raise UnsupportedKernel("MultiHeadAttention: packed QKV/KV or qk output not supported")
    n = ctx.attr("num_heads")
    hq, hk = query.shape[-1], key.shape[-1] if key.ndim == 3 else 0
    bq = bk = bv = None
    if bias is not None:
        bw = _work(bias)
        bq, bk, bv = bw[:hq], bw[hq:hq + hk], bw[hq + hk:]
    q = _mha_project(query, bq, n)
    k = _mha_project(key, bk if key.ndim == 3 else None, n)
    v = _mha_project(value, bv if value.ndim == 3 else None, n)
    plen = 0
    if past_key is not None and past_value is not None:
        plen = past_key.shape[2]
        k = np.concatenate([_work(past_key), k], axis=2)
        v = np.concatenate([_work(past_value), v], axis=2)
    bsz, s = query.shape[:2]
    mbias = _mask_bias(mask, bsz, s, k.shape[2], plen, bool(ctx.attr("unidirectional")),
                       ctx.attr("mask_filter_value"))
    y = _attend(q, k, v, ctx.attr("scale"), mbias, extra).astype(query.dtype)
    outs = (y, k.astype(query.dtype), v.astype(query.dtype))
    return y if ctx.num_outputs == 1 else outs[: ctx.num_outputs]


# --------------------------------------------------------------------------- MatMulNBits


def _unpack_bits(packed: Array, bits: int) -> Array:
    """uint8 bytes -> values of ``bits`` bits along the last axis (low bits first)."""
    per = 8 // bits
    shifts = (np.arange(per, dtype=np.uint8) * bits).astype(np.uint8)
    vals = (packed[..., None] >> shifts) & np.uint8((1 << bits) - 1)
    return vals.reshape(*packed.shape[:-1], packed.shape[-1] * per)


def _nbits_weight(
    ctx: KernelContext, b: Array, scales: Array, zp: Array | None
) -> Array:
    k, n, bits, block = (ctx.attr(a) for a in ("K", "N", "bits", "block_size"))
    if bits not in (2, 4, 8) or ctx.attr("weight_prepacked"):
        raise UnsupportedKernel(f"MatMulNBits: bits={bits} / prepacked weights not supported")
    blocks = -(-k // block)
    q = _unpack_bits(b.reshape(n, blocks, -1), bits)[:, :, :block].astype(np.float32)
    s = _work(scales).reshape(n, blocks, 1).astype(np.float32)
    if zp is None:
        z = np.float32(2 ** (bits - 1))
    elif zp.dtype == np.uint8:
        z = _unpack_bits(zp.reshape(n, -1), bits)[:, :blocks].astype(np.float32)[..., None]
    else:
        z = _work(zp).reshape(n, blocks, 1).astype(np.float32)
    w = ((q - z) * s).reshape(n, blocks * block)[:, :k]
    return np.ascontiguousarray(w.T)


def _matmul_nbits(
    ctx: KernelContext, a: Array, b: Array, scales: Array, zp: Array | None = None,
    g_idx: Array | None = None, bias: Array | None = None,
) -> Array:
    _float_only("MatMulNBits", a)
    if g_idx is not None:
        raise UnsupportedKernel("MatMulNBits: g_idx not supported")
    hit = ctx.cache.get("nbits")
    if hit is None or hit[0] is not b or hit[1] is not scales or hit[2] is not zp:
        hit = (b, scales, zp, _nbits_weight(ctx, b, scales, zp))
        ctx.cache["nbits"] = hit
    y = np.matmul(_work(a).astype(np.float32), hit[3])
    if bias is not None:
        y = y + _work(bias)
    return y.astype(a.dtype)


KERNELS: dict[str, Any] = {
    "FusedMatMul": _fused_matmul,
    "FusedConv": _fused_conv,
    "SkipLayerNormalization": _skip_layer_norm,
    "SkipSimplifiedLayerNormalization": _skip_simplified_norm,
    "SimplifiedLayerNormalization": _simplified_norm,
    "BiasSoftmax": _bias_softmax,
    "DynamicQuantizeMatMul": _dynamic_quantize_matmul,
    "MatMulIntegerToFloat": _matmul_integer_to_float,
    "QGemm": _qgemm,
    "QLinearAdd": _qlinear_add,
    "QLinearMul": _qlinear_mul,
    "QLinearSigmoid": _qlinear_sigmoid,
    "QLinearLeakyRelu": _qlinear_leaky_relu,
    "QLinearGlobalAveragePool": _qlinear_gap,
    "QLinearConcat": _qlinear_concat,
    "DynamicQuantizeLSTM": _dynamic_quantize_lstm,
    "MsAttention": _attention,
    "MsMultiHeadAttention": _multi_head_attention,
    "MatMulNBits": _matmul_nbits,
}
