"""Reduction kernels: Reduce*, ArgMax/ArgMin, CumSum.

Semantics are those of the ONNX operators (see ``ir/ops/reduce.py``): ``axes``
is an optional int64 input; absent or empty means every axis, or no axis with
``noop_with_empty_axes=1`` (composite reductions still apply their elementwise
steps then). Empty-set reductions give the reduction's identity (-inf / dtype
minimum for ReduceMax, ...). Integers accumulate in their own dtype (wrapping
like C), except ReduceL2, which accumulates in 64 bits before the square
root; integer ReduceMean truncates toward zero. float16/bfloat16 accumulate in
float32 and round once.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from converter.executor.kernels.elementwise import is_bool, is_float, is_int, require, working
from converter.executor.registry import Kernel, KernelContext

__all__ = ["KERNELS"]

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


def _cumsum(ctx: KernelContext, x: Array, axis: Array) -> Array:
    require("CumSum", x, is_float, is_int)
    if axis.size != 1:
        raise ValueError(f"CumSum: axis must be a scalar, got shape {axis.shape}")
    ax = _norm_axis(int(axis.reshape(-1)[0]), x.ndim)
    w = working(x)
    if ctx.attr("reverse"):
        w = np.flip(w, ax)
    out = np.cumsum(w, axis=ax, dtype=w.dtype)
    if ctx.attr("exclusive"):
        shifted = np.zeros_like(out)
        dst = [slice(None)] * out.ndim
        src = [slice(None)] * out.ndim
        dst[ax], src[ax] = slice(1, None), slice(None, -1)
        shifted[tuple(dst)] = out[tuple(src)]
        out = shifted
    if ctx.attr("reverse"):
        out = np.flip(out, ax)
    return np.ascontiguousarray(out).astype(x.dtype, copy=False)


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
    "CumSum": _cumsum,
}
