"""Reduction kernels: Reduce*, ArgMax/ArgMin, CumSum.

Semantics are those of the ONNX operators (see ``ir/ops/reduce.py``): ``axes``
is an optional int64 input; absent or empty means every axis, or no axis with
``noop_with_empty_axes=1`` (composite reductions still apply their elementwise
steps then). Empty-set reductions give the reduction's identity (-inf / dtype
minimum for ReduceMax, ...). Integers accumulate in their own dtype (wrapping
like C), except ReduceL2, which accumulates in 64 bits before the square
root; integer ReduceMean truncates toward zero. float16/bfloat16 accumulate in
float32 and round once. CumProd follows CumSum; LpNormalization,
RMSNormalization and the losses (NegativeLogLikelihoodLoss,
SoftmaxCrossEntropyLoss) follow ``ir/ops/reduce.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from converter.executor.kernels.elementwise import is_bool, is_float, is_int, require, working
from converter.executor.registry import Kernel, KernelContext, UnsupportedKernel

__all__ = ["KERNELS", "attention"]

Array = np.ndarray
Axes = tuple[int, ...] | None  # None: every axis; (): no axis


def _norm_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise ValueError(f"axis {axis} out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def _axes(ctx: KernelContext, data: Array, axes: Array | None) -> Axes:
    if axes is None or axes.size == 0:
        return () if ctx.attr("noop_with_empty_axes") else None
    norm = {_norm_axis(int(a), data.ndim) for a in axes.reshape(-1)}
    return tuple(sorted(norm))


def _count(shape: tuple[int, ...], axes: Axes) -> int:
    dims = shape if axes is None else [shape[a] for a in axes]
    return int(np.prod(dims, dtype=np.int64))


def _squeeze(x: Array, axes: Axes, keepdims: bool) -> Array:
    """Drop the kept (size-1) reduced axes of ``x`` unless ``keepdims``."""
    if keepdims:
        return x
    return x.reshape(()) if axes is None else np.squeeze(x, axis=axes)


def _extreme_identity(dtype: np.dtype, low: bool) -> object:
    """The identity of max (``low``) or min: -inf/+inf, dtype min/max, False/True."""
    if is_bool(dtype):
        return not low
    if is_int(dtype):
        info = np.iinfo(dtype)
        return info.min if low else info.max
    return -np.inf if low else np.inf


# -- reductions over the working array w (float32 for low-precision floats) ----------------
ReduceFn = Callable[[Array, Axes, bool], Array]


def _sum(w: Array, axes: Axes, keep: bool) -> Array:
    return np.sum(w, axis=axes, keepdims=keep, dtype=w.dtype)


def _mean(w: Array, axes: Axes, keep: bool) -> Array:
    total = _sum(w, axes, keep)
    if not is_int(w.dtype):
        return total / _count(w.shape, axes)  # 0 / 0 = nan over an empty set
    n = max(_count(w.shape, axes), 1)
    if w.dtype.kind == "u":
        return total // n
    return np.sign(total) * (np.abs(total) // n)  # truncate toward zero


def _max(w: Array, axes: Axes, keep: bool) -> Array:
    return np.max(w, axis=axes, keepdims=keep, initial=_extreme_identity(w.dtype, True))


def _min(w: Array, axes: Axes, keep: bool) -> Array:
    return np.min(w, axis=axes, keepdims=keep, initial=_extreme_identity(w.dtype, False))


def _prod(w: Array, axes: Axes, keep: bool) -> Array:
    return np.prod(w, axis=axes, keepdims=keep, dtype=w.dtype)


def _l1(w: Array, axes: Axes, keep: bool) -> Array:
    return _sum(np.abs(w), axes, keep)


def _l2(w: Array, axes: Axes, keep: bool) -> Array:
    if is_int(w.dtype):
        acc = np.uint64 if w.dtype.kind == "u" else np.int64
        wide = w.astype(acc)
        return np.sqrt(_sum(wide * wide, axes, keep).astype(np.float64))
    return np.sqrt(_sum(w * w, axes, keep))


def _log_sum(w: Array, axes: Axes, keep: bool) -> Array:
    return np.log(_sum(w, axes, keep))


def _log_sum_exp(w: Array, axes: Axes, keep: bool) -> Array:
    m = np.max(w, axis=axes, keepdims=True, initial=-np.inf)
    m = np.where(np.isfinite(m), m, 0).astype(w.dtype)
    s = np.sum(np.exp(w - m), axis=axes, keepdims=True)
    return _squeeze(np.log(s) + m, axes, keep)


def _sum_square(w: Array, axes: Axes, keep: bool) -> Array:
    return _sum(w * w, axes, keep)


def _reduce(op: str, fn: ReduceFn, *checks: Callable[[np.dtype], bool]) -> Kernel:
    def kernel(ctx: KernelContext, data: Array, axes: Array | None = None) -> Array:
        require(op, data, *checks)
        ax = _axes(ctx, data, axes)
        with np.errstate(all="ignore"):
            out = fn(working(data), ax, bool(ctx.attr("keepdims")))
        return np.asarray(out).astype(data.dtype, copy=False)

    return kernel


# -- ArgMax / ArgMin / CumSum ---------------------------------------------------------------
def _arg(op: str, fn: Callable[..., Array]) -> Kernel:
    def kernel(ctx: KernelContext, data: Array) -> Array:
        require(op, data, is_float, is_int)
        axis = _norm_axis(ctx.attr("axis"), data.ndim)
        w = working(data)
        if ctx.attr("select_last_index"):
            idx = data.shape[axis] - 1 - fn(np.flip(w, axis), axis=axis)
        else:
            idx = fn(w, axis=axis)
        if ctx.attr("keepdims"):
            idx = np.expand_dims(idx, axis)
        return np.asarray(idx).astype(np.int64, copy=False)

    return kernel


def _cumulative(op: str, fn: Callable[..., Array], identity: int) -> Kernel:
    def kernel(ctx: KernelContext, x: Array, axis: Array) -> Array:
        return _running(ctx, op, fn, identity, x, axis)

    return kernel


def _running(
    ctx: KernelContext, op: str, fn: Callable[..., Array], identity: int, x: Array, axis: Array
) -> Array:
    require(op, x, is_float, is_int)
    if axis.size != 1:
        raise ValueError(f"{op}: axis must be a scalar, got shape {axis.shape}")
    ax = _norm_axis(int(axis.reshape(-1)[0]), x.ndim)
    w = working(x)
    if ctx.attr("reverse"):
        w = np.flip(w, ax)
    with np.errstate(all="ignore"):
        out = fn(w, axis=ax, dtype=w.dtype)
    if ctx.attr("exclusive"):
        shifted = np.full_like(out, identity)
        dst = [slice(None)] * out.ndim
        src = [slice(None)] * out.ndim
        dst[ax], src[ax] = slice(1, None), slice(None, -1)
        shifted[tuple(dst)] = out[tuple(src)]
        out = shifted
    if ctx.attr("reverse"):
        out = np.flip(out, ax)
    return np.require(out, requirements="C").astype(x.dtype, copy=False)


# -- normalizations and losses --------------------------------------------------------------
def _lp_normalization(ctx: KernelContext, x: Array) -> Array:
    require("LpNormalization", x, is_float)
    p = ctx.attr("p")
    if p not in (1, 2):
        raise UnsupportedKernel(f"LpNormalization: p={p} not supported (1 or 2)")
    axis = _norm_axis(ctx.attr("axis"), x.ndim)
    w = working(x)
    with np.errstate(all="ignore"):
        norm = np.sum(np.abs(w) if p == 1 else w * w, axis=axis, keepdims=True)
        norm = norm if p == 1 else np.sqrt(norm)
        out = np.where(norm == 0, 0, w / norm)
    return out.astype(x.dtype)


def _rms_normalization(ctx: KernelContext, x: Array, scale: Array) -> Array:
    require("RMSNormalization", x, is_float)
    axis = _norm_axis(ctx.attr("axis"), x.ndim)
    w = x.astype(np.float64) if x.dtype == np.float64 else x.astype(np.float32)
    axes = tuple(range(axis, x.ndim))
    eps = ctx.attr("epsilon")
    with np.errstate(all="ignore"):
        rms = np.sqrt(np.mean(w * w, axis=axes, keepdims=True) + eps)
        out = (w / rms) * scale.astype(w.dtype)
    return out.astype(x.dtype)


def _nll(x: Array, target: Array, weight: Array | None, ctx: KernelContext) -> Array:
    """NegativeLogLikelihoodLoss on float ``x`` (already in the working dtype)."""
    if x.ndim < 2:
        raise ValueError(f"loss input must have rank >= 2, got {x.ndim}")
    t = target.astype(np.int64)
    ignore = ctx.attr("ignore_index")
    keep = np.ones(t.shape, bool) if ignore is None else t != ignore
    safe = np.clip(np.where(keep, t, 0), 0, x.shape[1] - 1)
    picked = -np.take_along_axis(x, safe[:, None], axis=1)[:, 0]
    if weight is None:
        w = keep.astype(x.dtype)
    else:
        w = np.where(keep, working(weight).astype(x.dtype)[safe], 0).astype(x.dtype)
    loss = picked * w
    reduction = ctx.attr("reduction")
    if reduction == "none":
        return loss
    if reduction == "sum":
        return np.sum(loss, dtype=x.dtype)
    if reduction == "mean":
        return np.sum(loss, dtype=x.dtype) / np.sum(w, dtype=x.dtype)
    raise UnsupportedKernel(f"loss reduction {reduction!r} not supported")


def _nll_loss(ctx: KernelContext, x: Array, target: Array, weight: Array | None = None):
    require("NegativeLogLikelihoodLoss", x, is_float)
    with np.errstate(all="ignore"):
        return np.asarray(_nll(working(x), target, weight, ctx)).astype(x.dtype)


def _softmax_ce_loss(
    ctx: KernelContext, scores: Array, labels: Array, weights: Array | None = None
) -> tuple[Array, ...]:
    require("SoftmaxCrossEntropyLoss", scores, is_float)
    w = working(scores)
    with np.errstate(all="ignore"):
        shifted = w - np.max(w, axis=1, keepdims=True)
        log_prob = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
        loss = np.asarray(_nll(log_prob, labels, weights, ctx)).astype(scores.dtype)
    return (loss, log_prob.astype(scores.dtype))[: ctx.num_outputs]


# -- Attention ------------------------------------------------------------------------------
def _split_heads(x: Array, heads: int) -> Array:
    """(batch, seq, heads * size) -> (batch, heads, seq, size)."""
    b, n, hidden = x.shape
    if hidden % heads:
        raise ValueError(f"Attention: hidden size {hidden} is not divisible by {heads} heads")
    return x.reshape(b, n, heads, hidden // heads).transpose(0, 2, 1, 3)


def _band(sq: int, skv: int, offset: Array | int, lo: int | None, hi: int | None) -> Array:
    """0 where ``lo <= (i + offset) - j <= hi`` (None: unbounded), else -inf.

    ``offset`` is a scalar or one value per batch (result (batch, 1, sq, skv)).
    """
    off = np.asarray(offset, np.int64)
    i = np.arange(sq)[:, None]
    j = np.arange(skv)[None, :]
    diff = (i + off.reshape(-1, 1, 1) if off.ndim else i + int(off)) - j
    ok = np.ones(diff.shape, bool)
    if lo is not None:
        ok &= diff >= lo
    if hi is not None:
        ok &= diff <= hi
    bias = np.where(ok, 0.0, -np.inf).astype(np.float32)
    return bias[:, None] if off.ndim else bias


def _attention_bias(
    ctx: KernelContext,
    sq: int,
    skv: int,
    mask: Array | None,
    past_len: int | None,
    nonpad: Array | None,
) -> Array:
    bias: Array = np.zeros((sq, skv), np.float32)
    if mask is not None:
        pad = skv - mask.shape[-1]
        if pad > 0:
            fill = False if mask.dtype == np.bool_ else -np.inf
            width = [(0, 0)] * (mask.ndim - 1) + [(0, pad)]
            mask = np.pad(mask, width, constant_values=fill)
        if mask.dtype == np.bool_:
            bias = bias + np.where(mask, 0.0, -np.inf).astype(np.float32)
        else:
            require("Attention", mask, is_float)
            bias = bias + working(mask).astype(np.float32)
    if past_len is None and nonpad is not None:
        offset: Array | int = nonpad.reshape(-1).astype(np.int64) - sq
    else:
        offset = past_len or 0
    if ctx.attr("is_causal"):
        bias = bias + _band(sq, skv, offset, 0, None)
    left, right = ctx.attr("left_window_size"), ctx.attr("right_window_size")
    if left >= 0 or right >= 0:
        lo = None if right < 0 else -right
        bias = bias + _band(sq, skv, offset, lo, None if left < 0 else left)
    if nonpad is not None:
        keep = np.arange(skv)[None, :] < nonpad.reshape(-1, 1)
        bias = bias + np.where(keep, 0.0, -np.inf).astype(np.float32)[:, None, None, :]
    return bias


def _fits(small: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    """Whether ``small`` broadcasts onto ``shape`` without growing it."""
    try:
        return np.broadcast_shapes(small, shape) == shape
    except ValueError:
        return False


def _attend(
    wq: Array, wk: Array, wv: Array, bias: Array, scale: Any, rank3: bool, s: Array
) -> Array:
    """softmax(q k^T * scale + bias) v, in place in the scores buffer ``s``.

    The same operations per element as the general path of ``attention`` (so
    the same bits), without its temporaries: scores are scaled, biased,
    shifted, exponentiated and normalized where they lie (``s`` is a reused
    work buffer, see ``_scores_buffer``), and rank-3 results are written
    straight into the (batch, seq, heads * size) layout.
    """
    np.matmul(wq, np.swapaxes(wk, -1, -2), out=s)
    s *= scale
    s += bias
    top = np.max(s, axis=-1, keepdims=True)
    top[np.isneginf(top)] = 0
    s -= top
    np.exp(s, out=s)
    total = np.sum(s, axis=-1, keepdims=True)
    total[total == 0] = 1
    s /= total
    masked = np.isneginf(np.max(bias, axis=-1, keepdims=True))
    if masked.any():  # rows whose every key is masked out give zeros
        np.copyto(s, 0, where=masked)
    b, h, sq = s.shape[:3]
    if not rank3:
        return np.matmul(s, wv)
    y = np.empty((b, sq, h, wv.shape[-1]), dtype=s.dtype)
    np.matmul(s, wv, out=y.transpose(0, 2, 1, 3))
    return y.reshape(b, sq, -1)


def _scores_buffer(ctx: KernelContext, shape: tuple[int, ...], dtype: np.dtype) -> Array:
    """A (batch, heads, q, kv) work buffer from the runtime's pool (``ctx.scratch``).

    A fresh one per call costs page faults comparable to the softmax itself.
    """
    lend = getattr(ctx, "scratch", None)
    return np.empty(shape, dtype) if lend is None else lend("attention-scores", shape, dtype)


def attention(
    ctx: KernelContext,
    q: Array,
    k: Array,
    v: Array,
    mask: Array | None = None,
    past_key: Array | None = None,
    past_value: Array | None = None,
    nonpad: Array | None = None,
) -> tuple[Array, ...]:
    require("Attention", q, is_float)
    if (past_key is None) != (past_value is None):
        raise ValueError("Attention: past_key and past_value come together")
    rank3 = q.ndim == 3
    if rank3:
        hq, hkv = ctx.attr("q_num_heads"), ctx.attr("kv_num_heads")
        if not hq or not hkv:
            raise ValueError("Attention: 3-D inputs need q_num_heads and kv_num_heads")
        q, k, v = _split_heads(q, hq), _split_heads(k, hkv), _split_heads(v, hkv)
    present_k = k if past_key is None else np.concatenate((past_key, k), axis=2)
    present_v = v if past_value is None else np.concatenate((past_value, v), axis=2)
    wq, wk, wv = (working(a) for a in (q, present_k, present_v))
    if wq.dtype != np.float64:
        wq, wk, wv = (a.astype(np.float32, copy=False) for a in (wq, wk, wv))
    if q.shape[1] != wk.shape[1]:
        if q.shape[1] % wk.shape[1]:
            raise ValueError(f"Attention: {q.shape[1]} query heads, {wk.shape[1]} kv heads")
        reps = q.shape[1] // wk.shape[1]
        wk, wv = np.repeat(wk, reps, axis=1), np.repeat(wv, reps, axis=1)
    sq, skv = q.shape[2], wk.shape[2]
    past_len = None if past_key is None else past_key.shape[2]
    bias = _attention_bias(ctx, sq, skv, mask, past_len, nonpad).astype(wq.dtype)
    scale = ctx.attr("scale")
    scale = 1.0 / np.sqrt(q.shape[3]) if scale is None else scale
    cap = ctx.attr("softcap")
    shape = (*wq.shape[:-1], skv)
    if ctx.num_outputs <= 3 and cap <= 0 and _fits(bias.shape, shape):
        s = _scores_buffer(ctx, shape, wq.dtype)
        with np.errstate(all="ignore"):
            y = _attend(wq, wk, wv, bias, wq.dtype.type(scale), rank3, s)
        return (y.astype(q.dtype, copy=False), present_k, present_v)[: ctx.num_outputs]
    with np.errstate(all="ignore"):
        scores = np.matmul(wq, np.swapaxes(wk, -1, -2)) * wq.dtype.type(scale)
        if cap > 0:
            scores = cap * np.tanh(scores / cap)
        biased = scores + bias
        top = np.max(biased, axis=-1, keepdims=True)
        e = np.exp(biased - np.where(np.isneginf(top), 0, top))
        total = np.sum(e, axis=-1, keepdims=True)
        probs = e / np.where(total == 0, 1, total)
        masked_rows = np.isneginf(np.max(np.broadcast_to(bias, biased.shape), -1, keepdims=True))
        probs = np.where(masked_rows, 0, probs)
        y = np.matmul(probs, wv)
    if rank3:
        y = y.transpose(0, 2, 1, 3).reshape(y.shape[0], y.shape[2], -1)
    mode = ctx.attr("qk_matmul_output_mode")
    qk = {0: scores, 1: scores, 2: biased, 3: probs}.get(mode)
    if qk is None:
        raise UnsupportedKernel(f"Attention: qk_matmul_output_mode={mode} not supported")
    outs = (y.astype(q.dtype), present_k, present_v, qk.astype(q.dtype))
    return outs[: ctx.num_outputs]


_NUM = (is_float, is_int)

KERNELS: dict[str, Kernel] = {
    "ReduceSum": _reduce("ReduceSum", _sum, *_NUM),
    "ReduceMean": _reduce("ReduceMean", _mean, *_NUM),
    "ReduceMax": _reduce("ReduceMax", _max, *_NUM, is_bool),
    "ReduceMin": _reduce("ReduceMin", _min, *_NUM, is_bool),
    "ReduceProd": _reduce("ReduceProd", _prod, *_NUM),
    "ReduceL1": _reduce("ReduceL1", _l1, *_NUM),
    "ReduceL2": _reduce("ReduceL2", _l2, *_NUM),
    "ReduceLogSum": _reduce("ReduceLogSum", _log_sum, is_float),
    "ReduceLogSumExp": _reduce("ReduceLogSumExp", _log_sum_exp, is_float),
    "ReduceSumSquare": _reduce("ReduceSumSquare", _sum_square, *_NUM),
    "ArgMax": _arg("ArgMax", np.argmax),
    "ArgMin": _arg("ArgMin", np.argmin),
    "CumSum": _cumulative("CumSum", np.cumsum, 0),
    "CumProd": _cumulative("CumProd", np.cumprod, 1),
    "LpNormalization": _lp_normalization,
    "RMSNormalization": _rms_normalization,
    "NegativeLogLikelihoodLoss": _nll_loss,
    "SoftmaxCrossEntropyLoss": _softmax_ce_loss,
    "Attention": attention,
}
