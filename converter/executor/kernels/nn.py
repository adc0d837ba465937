"""NumPy kernels of the neural-network ops (ONNX semantics, see ``ir/ops/nn.py``).

Layout: kernels compute in NCHW; for ``format="NHWC"`` the channel axis is
moved in front and back again (per-channel ops broadcast on the last axis
directly). Precision: float32 stays float32 throughout; float16/bfloat16 data
are computed in float32 and cast back (as onnxruntime's CPU kernels do).

Conv is im2col (one strided copy per kernel tap) plus one batched matmul
over a [group, ...] layout; 1x1 convs are a plain matmul, depthwise convs a
multiply-add over the kernel taps. Pools accumulate over the kernel taps with
whole-tensor vector ops. Prepared weights are cached per node in
``ctx.cache`` while the weight input is the same array object.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from converter.executor.registry import KernelContext, UnsupportedKernel
from ir.ops.nn import conv_transpose_geometry, resize_output_shape, resolve_pads

__all__ = ["KERNELS"]

_LOW_FLOATS = {np.dtype(np.float16)}
try:  # bfloat16 when ml_dtypes is there (it is a dependency of ir.dtypes)
    import ml_dtypes

    _LOW_FLOATS.add(np.dtype(ml_dtypes.bfloat16))
except ImportError:  # pragma: no cover
    pass

Array = np.ndarray

# --------------------------------------------------------------------------- helpers


def _work(x: Array) -> Array:
    """``x`` in its compute dtype (half floats are widened to float32)."""
    return x.astype(np.float32) if x.dtype in _LOW_FLOATS else x


def _float_only(op: str, x: Array) -> None:
    if x.dtype.kind != "f" and x.dtype not in _LOW_FLOATS:
        raise UnsupportedKernel(f"{op}: dtype {x.dtype} not supported")


def _nhwc(ctx: KernelContext) -> bool:
    return ctx.attr("format") == "NHWC"


def _channels_first(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run an NCHW kernel on NHWC data by moving the channel axis around it."""

    def wrapped(ctx: KernelContext, x: Array, *rest: Any) -> Any:
        if not _nhwc(ctx):
            return fn(ctx, x, *rest)
        out = fn(ctx, np.moveaxis(x, -1, 1), *rest)
        if isinstance(out, tuple):
            return (np.ascontiguousarray(np.moveaxis(out[0], 1, -1)), *out[1:])
        return np.ascontiguousarray(np.moveaxis(out, 1, -1))

    wrapped.__name__ = fn.__name__
    wrapped.__doc__ = fn.__doc__
    return wrapped


def _cached(ctx: KernelContext, key: str, arrays: Sequence[Any], make: Callable[[], Any]) -> Any:
    """``make()``, memoized in ctx.cache while ``arrays`` are the same objects."""
    hit = ctx.cache.get(key)
    if hit is not None and len(hit[0]) == len(arrays):
        if all(a is b for a, b in zip(hit[0], arrays, strict=True)):
            return hit[1]
    value = make()
    ctx.cache[key] = (tuple(arrays), value)
    return value


def _pad(x: Array, begin: Sequence[int], end: Sequence[int], value: Any = 0) -> Array:
    """Pad (or crop, for negative pads) the trailing ``len(begin)`` axes."""
    if not any(begin) and not any(end):
        return x
    lead = x.ndim - len(begin)
    grow_b = [max(b, 0) for b in begin]
    grow_e = [max(e, 0) for e in end]
    shape = x.shape[:lead] + tuple(
        s + b + e for s, b, e in zip(x.shape[lead:], grow_b, grow_e, strict=True)
    )
    out = np.full(shape, value, dtype=x.dtype)
    inner = tuple(slice(b, b + s) for b, s in zip(grow_b, x.shape[lead:], strict=True))
    out[(Ellipsis, *inner)] = x
    if min(begin) < 0 or min(end) < 0:
        crop = tuple(
            slice(-min(b, 0), n + min(e, 0))
            for b, e, n in zip(begin, end, shape[lead:], strict=True)
        )
        out = out[(Ellipsis, *crop)]
    return out


def _tap_slices(
    tap: Sequence[int], dil: Sequence[int], strides: Sequence[int], out: Sequence[int]
) -> tuple[slice, ...]:
    """Slices of a padded input that one kernel tap reads for every output position."""
    return tuple(
        slice(t * d, t * d + (o - 1) * s + 1, s)
        for t, d, s, o in zip(tap, dil, strides, out, strict=True)
    )


def _ints_or(value: Sequence[int] | None, n: int, fill: int) -> list[int]:
    return [fill] * n if not value else [int(v) for v in value]


# --------------------------------------------------------------------------- Conv


def _conv_geometry(ctx: KernelContext, x: Array, kernel: Sequence[int]) -> tuple:
    nd = x.ndim - 2
    strides = _ints_or(ctx.attr("strides"), nd, 1)
    dil = _ints_or(ctx.attr("dilations"), nd, 1)
    begin, end, out = resolve_pads(
        x.shape[2:], kernel, strides, dil, ctx.attr("pads"), ctx.attr("auto_pad")
    )
    return strides, dil, begin, end, out


@_channels_first
def _conv(ctx: KernelContext, x: Array, w: Array, b: Array | None = None) -> Array:
    """Conv (NCHW): im2col + grouped matmul; depthwise by taps; 1x1 as matmul."""
    _float_only("Conv", x)
    dtype = x.dtype
    x, nd = _work(x), x.ndim - 2
    kernel = list(w.shape[2:])
    strides, dil, begin, end, out = _conv_geometry(ctx, x, kernel)
    n, c = x.shape[:2]
    m, groups = w.shape[0], ctx.attr("group")
    cg, mg = c // groups, m // groups
    if cg * groups != c or w.shape[1] != cg:
        raise ValueError(f"Conv: input channels {c} do not match W {w.shape} x group {groups}")
    xp = _pad(x, begin, end)
    length = math.prod(out)
    if groups == c and cg == 1 and groups > 1 and math.prod(kernel) > 1:
        y = _depthwise(ctx, xp, w, kernel, strides, dil, out)
    elif all(k == 1 for k in kernel):
        wm = _cached(ctx, "w1x1", [w], lambda: _work(w).reshape(groups, mg, cg))
        xs = xp[(Ellipsis, *_tap_slices([0] * nd, [1] * nd, strides, out))]
        y = np.matmul(wm, xs.reshape(n, groups, cg, length))
    else:
        k = math.prod(kernel)
        wm = _cached(ctx, "wcol", [w], lambda: _work(w).reshape(groups, mg, cg * k))
        cols = _im2col(xp, kernel, strides, dil, out).reshape(n, groups, cg * k, length)
        y = np.matmul(wm, cols)
    y = y.reshape(n, m, *out)
    if b is not None:
        y += _work(b).reshape(m, *([1] * nd))
    return y.astype(dtype, copy=False)


def _im2col(
    xp: Array, kernel: Sequence[int], strides: Sequence[int], dil: Sequence[int],
    out: Sequence[int],
) -> Array:
    """Columns [N, C, prod(kernel), *out]: one strided copy per kernel tap."""
    n, c = xp.shape[:2]
    cols = np.empty((n, c, math.prod(kernel), *out), dtype=xp.dtype)
    for i, tap in enumerate(itertools.product(*(range(k) for k in kernel))):
        cols[:, :, i] = xp[(slice(None), slice(None), *_tap_slices(tap, dil, strides, out))]
    return cols


def _depthwise(
    ctx: KernelContext,
    xp: Array,
    w: Array,
    kernel: Sequence[int],
    strides: Sequence[int],
    dil: Sequence[int],
    out: Sequence[int],
) -> Array:
    """Depthwise conv: sum over taps of shifted input x per-channel weight."""
    n, c = xp.shape[:2]
    mult = w.shape[0] // c
    nd = len(kernel)
    taps = list(itertools.product(*(range(k) for k in kernel)))

    def prepare() -> list[Array]:
        w2 = _work(w).reshape(c, mult, *kernel)
        shape = (c, *([1] * nd)) if mult == 1 else (c, mult, *([1] * nd))
        return [np.ascontiguousarray(w2[(slice(None), slice(None), *t)]).reshape(shape)
                for t in taps]

    weights = _cached(ctx, "wdw", [w], prepare)
    if all(st == 1 for st in strides):
        return _depthwise_flat(xp, weights, taps, dil, out, mult)
    shape = (n, c, *out) if mult == 1 else (n, c, mult, *out)
    y = np.zeros(shape, dtype=xp.dtype)
    tmp = np.empty(shape, dtype=xp.dtype)
    for tap, wt in zip(taps, weights, strict=True):
        xs = xp[(slice(None), slice(None), *_tap_slices(tap, dil, strides, out))]
        if mult != 1:
            xs = xs[:, :, None]
        np.multiply(xs, wt, out=tmp)
        y += tmp
    return y


def _depthwise_flat(
    xp: Array, weights: list[Array], taps: list[tuple[int, ...]], dil: Sequence[int],
    out: Sequence[int], mult: int,
) -> Array:
    """Stride-1 depthwise conv on the flattened padded image: every tap is a contiguous run.

    Outputs are computed over whole padded rows (``out[0] x padded[1:]``) and the
    columns past ``out`` cropped at the end.
    """
    n, c = xp.shape[:2]
    padded = xp.shape[2:]
    pstrides = [math.prod(padded[i + 1:]) for i in range(len(padded))]
    length = out[0] * pstrides[0]
    offsets = [sum(t * d * ps for t, d, ps in zip(tap, dil, pstrides, strict=True))
               for tap in taps]
    flat = np.zeros((n, c, max(math.prod(padded), max(offsets) + length)), dtype=xp.dtype)
    flat[:, :, : math.prod(padded)] = xp.reshape(n, c, -1)
    shape = (n, c, length) if mult == 1 else (n, c, mult, length)
    y = np.zeros(shape, dtype=xp.dtype)
    tmp = np.empty(shape, dtype=xp.dtype)
    for off, wt in zip(offsets, weights, strict=True):
        xs = flat[:, :, off: off + length]
        if mult != 1:
            xs = xs[:, :, None]
        np.multiply(xs, wt.reshape(wt.shape[: 2 if mult != 1 else 1] + (1,)), out=tmp)
        y += tmp
    y = y.reshape(*shape[:-1], out[0], *padded[1:])
    return y[(Ellipsis, slice(None), *(slice(0, o) for o in out[1:]))]


@_channels_first
def _conv_transpose(ctx: KernelContext, x: Array, w: Array, b: Array | None = None) -> Array:
    """ConvTranspose (NCHW): grouped matmul to columns, then col2im over the taps."""
    _float_only("ConvTranspose", x)
    dtype = x.dtype
    x, nd = _work(x), x.ndim - 2
    n, c = x.shape[:2]
    groups = ctx.attr("group")
    cg, mg = c // groups, w.shape[1]
    m = mg * groups
    kernel = list(w.shape[2:])
    strides = _ints_or(ctx.attr("strides"), nd, 1)
    dil = _ints_or(ctx.attr("dilations"), nd, 1)
    in_sizes = list(x.shape[2:])
    begin, out = conv_transpose_geometry(
        in_sizes, kernel, strides, dil, ctx.attr("pads"), ctx.attr("output_padding"),
        ctx.attr("output_shape"), ctx.attr("auto_pad"),
    )
    k = math.prod(kernel)

    def prepare() -> Array:
        return np.ascontiguousarray(_work(w).reshape(groups, cg, mg * k).transpose(0, 2, 1))

    wm = _cached(ctx, "wt", [w], prepare)
    cols = np.matmul(wm, x.reshape(n, groups, cg, math.prod(in_sizes)))
    cols = cols.reshape(n, m, *kernel, *in_sizes)
    full = [
        s * (i - 1) + (kk - 1) * d + 1
        for s, i, kk, d in zip(strides, in_sizes, kernel, dil, strict=True)
    ]
    size = [max(f, bb + o) for f, bb, o in zip(full, begin, out, strict=True)]
    buf = np.zeros((n, m, *size), dtype=x.dtype)
    for tap in itertools.product(*(range(kk) for kk in kernel)):
        sl = _tap_slices(tap, dil, strides, in_sizes)
        buf[(slice(None), slice(None), *sl)] += cols[(slice(None), slice(None), *tap)]
    crop = tuple(slice(bb, bb + o) for bb, o in zip(begin, out, strict=True))
    y = buf[(slice(None), slice(None), *crop)]
    if b is not None:
        y = y + _work(b).reshape(m, *([1] * nd))
    return np.ascontiguousarray(y).astype(dtype, copy=False)


# --------------------------------------------------------------------------- pools


class _Window:
    """Geometry of one pooling call: pads (declared and ceil-extended), output sizes."""

    def __init__(self, ctx: KernelContext, spatial: Sequence[int]) -> None:
        nd = len(spatial)
        self.kernel = [int(k) for k in ctx.attr("kernel_shape")]
        self.strides = _ints_or(ctx.attr("strides"), nd, 1)
        self.dil = _ints_or(ctx.attr("dilations"), nd, 1)
        self.begin, self.end, self.out = resolve_pads(
            spatial, self.kernel, self.strides, self.dil, ctx.attr("pads"),
            ctx.attr("auto_pad"), ctx.attr("ceil_mode"),
        )
        self.spatial = list(spatial)
        # the last window may run past the declared end pad (ceil_mode)
        self.end_ext = [
            max(e, (o - 1) * s + (k - 1) * d + 1 - n - b)
            for e, o, s, k, d, n, b in zip(
                self.end, self.out, self.strides, self.kernel, self.dil, spatial, self.begin,
                strict=True,
            )
        ]
        self.taps = list(itertools.product(*(range(k) for k in self.kernel)))

    def slices(self, tap: Sequence[int]) -> tuple[slice, ...]:
        return (slice(None), slice(None), *_tap_slices(tap, self.dil, self.strides, self.out))

    def counts(self, include_pad: bool) -> Array:
        """Number of taps of each output window inside the input (or inside the pads)."""
        total: Array | None = None
        for i, n in enumerate(self.spatial):
            lo, hi = (-self.begin[i], n + self.end[i]) if include_pad else (0, n)
            pos = (np.arange(self.out[i])[:, None] * self.strides[i] - self.begin[i]
                   + np.arange(self.kernel[i])[None, :] * self.dil[i])
            cnt = ((pos >= lo) & (pos < hi)).sum(axis=1)
            total = cnt if total is None else np.multiply.outer(total, cnt)
        return np.asarray(total)


def _pool_prepare(ctx: KernelContext, x: Array, fill: Any) -> tuple[_Window, Array]:
    win = _Window(ctx, x.shape[2:])
    return win, _pad(x, win.begin, win.end_ext, fill)


def _min_value(dtype: np.dtype) -> Any:
    return -np.inf if dtype.kind == "f" else np.iinfo(dtype).min


@_channels_first
def _max_pool(ctx: KernelContext, x: Array) -> Array | tuple[Array, Array]:
    """MaxPool (NCHW) by a running maximum over the kernel taps; optional Indices."""
    want_idx = ctx.num_outputs > 1
    dtype = x.dtype
    x = _work(x)
    win, xp = _pool_prepare(ctx, x, _min_value(x.dtype))
    y: Array | None = None
    idx: Array | None = None
    for tap in win.taps:
        xs = xp[win.slices(tap)]
        if y is None:
            y = xs.copy()
            if want_idx:
                idx = np.broadcast_to(_tap_index(win, tap, ctx), xs.shape).copy()
            continue
        if want_idx:
            better = xs > y
            np.copyto(idx, _tap_index(win, tap, ctx), where=better)
            np.copyto(y, xs, where=better)
        else:
            np.maximum(y, xs, out=y)
    assert y is not None
    y = y.astype(dtype, copy=False)
    if not want_idx:
        return y
    n, c = x.shape[:2]
    base = (np.arange(n * c, dtype=np.int64) * math.prod(win.spatial)).reshape(n, c)
    return y, idx + base.reshape(n, c, *([1] * len(win.out)))


def _tap_index(win: _Window, tap: Sequence[int], ctx: KernelContext) -> Array:
    """Flat spatial input index read by ``tap`` at each output position."""
    col_major = ctx.attr("storage_order") == 1
    nd = len(win.out)
    order = range(nd - 1, -1, -1) if col_major else range(nd)
    flat = np.zeros([1] * nd, dtype=np.int64)
    for i in order:
        pos = np.arange(win.out[i], dtype=np.int64) * win.strides[i] - win.begin[i]
        pos = pos + tap[i] * win.dil[i]
        shape = [1] * nd
        shape[i] = win.out[i]
        flat = flat * win.spatial[i] + np.clip(pos, 0, win.spatial[i] - 1).reshape(shape)
    return flat


@_channels_first
def _average_pool(ctx: KernelContext, x: Array) -> Array:
    """AveragePool (NCHW): sum over taps divided by the per-window element count."""
    _float_only("AveragePool", x)
    dtype = x.dtype
    win, xp = _pool_prepare(ctx, _work(x), 0)
    acc = _sum_taps(win, xp, None)
    include = bool(ctx.attr("count_include_pad"))
    key = f"avgcnt{x.shape}{include}"
    if key not in ctx.cache:
        ctx.cache[key] = np.maximum(win.counts(include), 1).astype(acc.dtype)
    acc /= ctx.cache[key]
    return acc.astype(dtype, copy=False)


def _sum_taps(win: _Window, xp: Array, fn: Callable[[Array], Array] | None) -> Array:
    acc: Array | None = None
    for tap in win.taps:
        xs = xp[win.slices(tap)]
        term = xs if fn is None else fn(xs)
        if acc is None:
            acc = term.copy() if fn is None else term
        else:
            acc += term
    assert acc is not None
    return acc


def _lp_power(p: int) -> Callable[[Array], Array]:
    if p == 1:
        return np.abs
    if p == 2:
        return np.square
    return lambda v: np.abs(v) ** p


def _lp_root(acc: Array, p: int) -> Array:
    if p == 1:
        return acc
    if p == 2:
        return np.sqrt(acc)
    return acc ** (1.0 / p)


@_channels_first
def _lp_pool(ctx: KernelContext, x: Array) -> Array:
    """LpPool (NCHW): (sum over window of |x|^p)^(1/p)."""
    _float_only("LpPool", x)
    dtype, p = x.dtype, int(ctx.attr("p"))
    win, xp = _pool_prepare(ctx, _work(x), 0)
    return _lp_root(_sum_taps(win, xp, _lp_power(p)), p).astype(dtype, copy=False)


def _spatial_axes(ctx: KernelContext, x: Array) -> tuple[int, ...]:
    return tuple(range(1, x.ndim - 1)) if _nhwc(ctx) else tuple(range(2, x.ndim))


def _global_average_pool(ctx: KernelContext, x: Array) -> Array:
    _float_only("GlobalAveragePool", x)
    return np.mean(_work(x), axis=_spatial_axes(ctx, x), keepdims=True).astype(x.dtype)


def _global_max_pool(ctx: KernelContext, x: Array) -> Array:
    return np.max(x, axis=_spatial_axes(ctx, x), keepdims=True)


def _global_lp_pool(ctx: KernelContext, x: Array) -> Array:
    _float_only("GlobalLpPool", x)
    p = int(ctx.attr("p"))
    acc = np.sum(_lp_power(p)(_work(x)), axis=_spatial_axes(ctx, x), keepdims=True)
    return _lp_root(acc, p).astype(x.dtype, copy=False)


# --------------------------------------------------------------------------- normalization


def _channel_shape(ctx: KernelContext, x: Array) -> tuple[int, ...]:
    """Shape that broadcasts a per-channel vector against ``x`` in ctx's format."""
    if _nhwc(ctx):
        return (x.shape[-1],)
    return (x.shape[1], *([1] * (x.ndim - 2)))


def _batch_norm(
    ctx: KernelContext, x: Array, scale: Array, b: Array, mean: Array, var: Array
) -> Array:
    """Inference BatchNormalization: x * a + (B - mean * a), a = scale / sqrt(var + eps)."""
    if ctx.attr("training_mode"):
        raise UnsupportedKernel("BatchNormalization: training_mode=1 not supported")
    _float_only("BatchNormalization", x)
    eps = ctx.attr("epsilon")

    def prepare() -> tuple[Array, Array]:
        a = _work(scale).astype(np.float32) / np.sqrt(_work(var).astype(np.float32) + eps)
        shift = _work(b).astype(np.float32) - _work(mean).astype(np.float32) * a
        ct = _work(x[:0]).dtype
        return a.astype(ct), shift.astype(ct)

    a, shift = _cached(ctx, "bn", [scale, b, mean, var], prepare)
    shape = _channel_shape(ctx, x)
    y = _work(x) * a.reshape(shape)
    y += shift.reshape(shape)
    return y.astype(x.dtype, copy=False)


def _normalize(x: Array, axes: tuple[int, ...], eps: float) -> tuple[Array, Array, Array]:
    """(x - mean) / sqrt(var + eps) over ``axes``; returns also mean and 1/std."""
    mean = np.mean(x, axis=axes, keepdims=True)
    centered = x - mean
    var = np.mean(np.square(centered), axis=axes, keepdims=True)
    inv = 1.0 / np.sqrt(var + eps)
    inv = inv.astype(x.dtype, copy=False)
    return centered * inv, mean, inv


def _instance_norm(ctx: KernelContext, x: Array, scale: Array, b: Array) -> Array:
    _float_only("InstanceNormalization", x)
    shape = _channel_shape(ctx, x)
    y, _, _ = _normalize(_work(x), _spatial_axes(ctx, x), ctx.attr("epsilon"))
    y *= _work(scale).reshape(shape)
    y += _work(b).reshape(shape)
    return y.astype(x.dtype, copy=False)


def _stash(x: Array, stash_type: int) -> Array:
    return x.astype(np.float32) if stash_type == 1 and x.dtype != np.float64 else _work(x)


def _layer_norm(
    ctx: KernelContext, x: Array, scale: Array, b: Array | None = None
) -> Array | tuple[Array, ...]:
    """LayerNormalization over [axis, rank); optional Mean / InvStdDev outputs."""
    _float_only("LayerNormalization", x)
    axis = ctx.attr("axis") % x.ndim
    xs = _stash(x, ctx.attr("stash_type"))
    y, mean, inv = _normalize(xs, tuple(range(axis, x.ndim)), ctx.attr("epsilon"))
    y = y.astype(x.dtype, copy=False) if x.dtype not in _LOW_FLOATS else y
    y = y * _work(scale)
    if b is not None:
        y += _work(b)
    y = y.astype(x.dtype, copy=False)
    if ctx.num_outputs == 1:
        return y
    return (y, mean, inv)[: ctx.num_outputs]


@_channels_first
def _group_norm(ctx: KernelContext, x: Array, scale: Array, bias: Array) -> Array:
    """GroupNormalization (opset 21, NCHW): stats per (n, group), affine per channel."""
    _float_only("GroupNormalization", x)
    n, c = x.shape[:2]
    g = ctx.attr("num_groups")
    xs = _stash(x, ctx.attr("stash_type")).reshape(n, g, -1)
    y, _, _ = _normalize(xs, (2,), ctx.attr("epsilon"))
    shape = (c, *([1] * (x.ndim - 2)))
    y = y.reshape(x.shape) * _work(scale).reshape(shape).astype(y.dtype)
    y += _work(bias).reshape(shape).astype(y.dtype)
    return y.astype(x.dtype, copy=False)


def _lrn(ctx: KernelContext, x: Array) -> Array:
    """LRN across channels: x / (bias + alpha / size * window sum of x^2) ^ beta."""
    _float_only("LRN", x)
    size = ctx.attr("size")
    axis = x.ndim - 1 if _nhwc(ctx) else 1
    xw = _work(x)
    sq = np.moveaxis(np.square(xw), axis, -1)
    before = (size - 1) // 2
    padded = _pad(sq, [before], [size - 1 - before])
    acc = sliding_window_view(padded, size, axis=-1).sum(axis=-1)
    acc = np.moveaxis(acc, -1, axis)
    denom = (acc * (ctx.attr("alpha") / size) + ctx.attr("bias")) ** ctx.attr("beta")
    return (xw / denom).astype(x.dtype, copy=False)


def _mvn(ctx: KernelContext, x: Array) -> Array:
    _float_only("MeanVarianceNormalization", x)
    axes = tuple(a % x.ndim for a in ctx.attr("axes"))
    xw = _work(x)
    mean = np.mean(xw, axis=axes, keepdims=True)
    var = np.mean(np.square(xw), axis=axes, keepdims=True) - np.square(mean)
    return ((xw - mean) / (np.sqrt(np.maximum(var, 0)) + 1e-9)).astype(x.dtype, copy=False)


# --------------------------------------------------------------------------- matmul family


def _gemm(ctx: KernelContext, a: Array, b: Array, c: Array | None = None) -> Array:
    """Y = alpha * A' @ B' + beta * C."""
    dtype = a.dtype
    aa = _work(a).T if ctx.attr("transA") else _work(a)
    bb = _work(b).T if ctx.attr("transB") else _work(b)
    y = np.matmul(aa, bb)
    alpha, beta = ctx.attr("alpha"), ctx.attr("beta")
    if alpha != 1.0:
        y *= y.dtype.type(alpha)
    if c is not None and beta != 0.0:
        cc = _work(c)
        y += cc if beta == 1.0 else cc * y.dtype.type(beta)
    return y.astype(dtype, copy=False)


def _matmul(ctx: KernelContext, a: Array, b: Array) -> Array:
    if a.dtype in _LOW_FLOATS:
        return np.matmul(_work(a), _work(b)).astype(a.dtype)
    return np.matmul(a, b)


def _softmax(ctx: KernelContext, x: Array) -> Array:
    axis = ctx.attr("axis")
    xw = _work(x)
    e = np.exp(xw - np.max(xw, axis=axis, keepdims=True))
    e /= np.sum(e, axis=axis, keepdims=True)
    return e.astype(x.dtype, copy=False)


def _log_softmax(ctx: KernelContext, x: Array) -> Array:
    axis = ctx.attr("axis")
    xw = _work(x)
    shifted = xw - np.max(xw, axis=axis, keepdims=True)
    shifted -= np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))
    return shifted.astype(x.dtype, copy=False)


def _hardmax(ctx: KernelContext, x: Array) -> Array:
    axis = ctx.attr("axis") % x.ndim
    y = np.zeros_like(x)
    idx = np.expand_dims(np.argmax(x, axis=axis), axis)
    np.put_along_axis(y, idx, 1, axis=axis)
    return y


def _dropout(
    ctx: KernelContext, x: Array, ratio: Array | None = None, training: Array | None = None
) -> Array | tuple[Array, Array]:
    """Identity with an all-true mask, unless training_mode is true."""
    r = 0.5 if ratio is None else float(ratio)
    if training is None or not bool(training) or r == 0.0:
        y, mask = x, np.ones(x.shape, dtype=bool)
    else:
        rng = np.random.default_rng(ctx.attr("seed"))
        mask = rng.random(x.shape) >= r
        y = (_work(x) * mask * (1.0 / (1.0 - r))).astype(x.dtype)
    return (y, mask) if ctx.num_outputs > 1 else y


def _einsum(ctx: KernelContext, *xs: Array) -> Array:
    eq = ctx.attr("equation").replace(" ", "")
    low = xs[0].dtype in _LOW_FLOATS
    args = [_work(v) for v in xs] if low else list(xs)
    y = np.einsum(eq, *args, optimize=len(xs) > 1)
    return np.asarray(y).astype(xs[0].dtype, copy=False)


# --------------------------------------------------------------------------- RNN family


def _hard_sigmoid(v: Array, a: float, b: float) -> Array:
    return np.clip(v * a + b, 0, 1)


_ACTS: dict[str, tuple[Callable[[Array, float, float], Array], float | None, float | None]] = {
    "relu": (lambda v, a, b: np.maximum(v, 0), None, None),
    "tanh": (lambda v, a, b: np.tanh(v), None, None),
    "sigmoid": (lambda v, a, b: 1.0 / (1.0 + np.exp(-v)), None, None),
    "affine": (lambda v, a, b: v * a + b, 1.0, 0.0),
    "leakyrelu": (lambda v, a, b: np.where(v >= 0, v, v * a), 0.01, None),
    "thresholdedrelu": (lambda v, a, b: np.where(v > a, v, 0), 1.0, None),
    "scaledtanh": (lambda v, a, b: a * np.tanh(v * b), 1.0, 1.0),
    "hardsigmoid": (_hard_sigmoid, 0.2, 0.5),
    "elu": (lambda v, a, b: np.where(v >= 0, v, a * (np.exp(v) - 1)), 1.0, None),
    "softsign": (lambda v, a, b: v / (1 + np.abs(v)), None, None),
    "softplus": (lambda v, a, b: np.logaddexp(v, 0), None, None),
}
_DEFAULT_ACTS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"],
                 "RNN": ["Tanh"]}


def _activations(ctx: KernelContext, dirs: int) -> list[list[Callable[[Array], Array]]]:
    """Per direction, the activation callables (alpha/beta consumed in list order)."""
    names = ctx.attr("activations")
    per = len(_DEFAULT_ACTS[ctx.node.op])
    if not names:
        names = _DEFAULT_ACTS[ctx.node.op] * dirs
    elif len(names) == per and dirs == 2:
        names = list(names) * 2
    alphas = list(ctx.attr("activation_alpha") or [])
    betas = list(ctx.attr("activation_beta") or [])
    out: list[Callable[[Array], Array]] = []
    for name in names[: per * dirs]:
        key = str(name).lower()
        if key not in _ACTS:
            raise UnsupportedKernel(f"{ctx.node.op}: activation {name} not supported")
        fn, da, db = _ACTS[key]
        a = alphas.pop(0) if da is not None and alphas else (da or 0.0)
        b = betas.pop(0) if db is not None and betas else (db or 0.0)
        out.append(lambda v, fn=fn, a=a, b=b: fn(v, a, b))
    return [out[d * per:(d + 1) * per] for d in range(dirs)]


class _Seq:
    """The direction-independent parts of a recurrent op call."""

    def __init__(self, ctx: KernelContext, x: Array, w: Array, seq_lens: Array | None) -> None:
        self.layout = ctx.attr("layout")
        self.x = _work(x.transpose(1, 0, 2) if self.layout else x)
        self.steps, self.batch = self.x.shape[:2]
        self.dirs = w.shape[0]
        self.clip = ctx.attr("clip")
        self.acts = _activations(ctx, self.dirs)
        self.mask = None
        if seq_lens is not None and np.any(seq_lens.astype(np.int64) < self.steps):
            t = np.arange(self.steps)[:, None]
            self.mask = (t < seq_lens.reshape(1, -1))[:, :, None]  # [T, B, 1]

    def state(self, init: Array | None, d: int, hidden: int) -> Array:
        if init is None:
            return np.zeros((self.batch, hidden), dtype=self.x.dtype)
        s = init.transpose(1, 0, 2) if self.layout else init
        return _work(s[d]).astype(self.x.dtype, copy=True)

    def order(self, d: int, direction: str) -> range:
        reverse = direction == "reverse" or (direction == "bidirectional" and d == 1)
        return range(self.steps - 1, -1, -1) if reverse else range(self.steps)

    def clipped(self, v: Array) -> Array:
        return v if self.clip is None else np.clip(v, -self.clip, self.clip)

    def keep(self, t: int, new: Array, old: Array) -> Array:
        return new if self.mask is None else np.where(self.mask[t], new, old)

    def emit(self, t: int, h: Array) -> Array:
        return h if self.mask is None else np.where(self.mask[t], h, 0)

    def finish(self, ctx: KernelContext, ys: list[Array], states: list[list[Array]]) -> tuple:
        dtype = ctx.node.inputs[0].dtype.numpy if ctx.node.inputs[0] is not None else None
        y = np.stack(ys, axis=1)  # [T, dirs, B, H]
        finals = [np.stack(s, axis=0) for s in states]  # [dirs, B, H]
        if self.layout:
            y = y.transpose(2, 0, 1, 3)
            finals = [f.transpose(1, 0, 2) for f in finals]
        outs = [np.ascontiguousarray(a) for a in (y, *finals)]
        if dtype is not None:
            outs = [a.astype(dtype, copy=False) for a in outs]
        return tuple(outs[: ctx.num_outputs])


def _lstm(
    ctx: KernelContext, x: Array, w: Array, r: Array, b: Array | None = None,
    seq_lens: Array | None = None, init_h: Array | None = None, init_c: Array | None = None,
    p: Array | None = None,
) -> tuple[Array, ...]:
    """LSTM, gates in iofc order; time steps loop, batch and gates vectorized."""
    _float_only("LSTM", x)
    sq = _Seq(ctx, x, w, seq_lens)
    hidden = r.shape[-1]
    ys, hs, cs = [], [], []
    for d in range(sq.dirs):
        f, g, hact = sq.acts[d]
        xw = np.matmul(sq.x, _work(w[d]).T)
        if b is not None:
            xw += _work(b[d, : 4 * hidden] + b[d, 4 * hidden:])
        rt = np.ascontiguousarray(_work(r[d]).T)
        pi, po, pf = (None, None, None) if p is None else np.split(_work(p[d]), 3)
        h, c = sq.state(init_h, d, hidden), sq.state(init_c, d, hidden)
        y = np.zeros((sq.steps, sq.batch, hidden), dtype=sq.x.dtype)
        for t in sq.order(d, ctx.attr("direction")):
            gates = xw[t] + h @ rt
            gi, go, gf, gc = np.split(gates, 4, axis=1)
            if pi is not None:
                gi = gi + pi * c
                gf = gf + pf * c
            it = f(sq.clipped(gi))
            ft = 1 - it if ctx.attr("input_forget") else f(sq.clipped(gf))
            c_new = ft * c + it * g(sq.clipped(gc))
            if po is not None:
                go = go + po * c_new
            h_new = f(sq.clipped(go)) * hact(c_new)
            y[t] = sq.emit(t, h_new)
            h, c = sq.keep(t, h_new, h), sq.keep(t, c_new, c)
        ys.append(y)
        hs.append(h)
        cs.append(c)
    return sq.finish(ctx, ys, [hs, cs])


def _gru(
    ctx: KernelContext, x: Array, w: Array, r: Array, b: Array | None = None,
    seq_lens: Array | None = None, init_h: Array | None = None,
) -> tuple[Array, ...]:
    """GRU, gates in zrh order, with or without linear_before_reset."""
    _float_only("GRU", x)
    sq = _Seq(ctx, x, w, seq_lens)
    hidden = r.shape[-1]
    lbr = ctx.attr("linear_before_reset")
    ys, hs = [], []
    for d in range(sq.dirs):
        f, g = sq.acts[d]
        xw = np.matmul(sq.x, _work(w[d]).T)
        rb = np.zeros(3 * hidden, dtype=sq.x.dtype)
        if b is not None:
            xw += _work(b[d, : 3 * hidden])
            rb = _work(b[d, 3 * hidden:]).astype(sq.x.dtype)
        rw = _work(r[d])
        r_zr = np.ascontiguousarray(rw[: 2 * hidden].T)
        r_h = np.ascontiguousarray(rw[2 * hidden:].T)
        h = sq.state(init_h, d, hidden)
        y = np.zeros((sq.steps, sq.batch, hidden), dtype=sq.x.dtype)
        for t in sq.order(d, ctx.attr("direction")):
            zr = xw[t, :, : 2 * hidden] + h @ r_zr + rb[: 2 * hidden]
            z, rr = np.split(f(sq.clipped(zr)), 2, axis=1)
            if lbr:
                pre = xw[t, :, 2 * hidden:] + rr * (h @ r_h + rb[2 * hidden:])
            else:
                pre = xw[t, :, 2 * hidden:] + (rr * h) @ r_h + rb[2 * hidden:]
            h_new = (1 - z) * g(sq.clipped(pre)) + z * h
            y[t] = sq.emit(t, h_new)
            h = sq.keep(t, h_new, h)
        ys.append(y)
        hs.append(h)
    return sq.finish(ctx, ys, [hs])


def _rnn(
    ctx: KernelContext, x: Array, w: Array, r: Array, b: Array | None = None,
    seq_lens: Array | None = None, init_h: Array | None = None,
) -> tuple[Array, ...]:
    """Simple RNN: Ht = f(Xt W^T + Ht-1 R^T + Wb + Rb)."""
    _float_only("RNN", x)
    sq = _Seq(ctx, x, w, seq_lens)
    hidden = r.shape[-1]
    ys, hs = [], []
    for d in range(sq.dirs):
        (f,) = sq.acts[d][:1]
        xw = np.matmul(sq.x, _work(w[d]).T)
        if b is not None:
            xw += _work(b[d, :hidden] + b[d, hidden:])
        rt = np.ascontiguousarray(_work(r[d]).T)
        h = sq.state(init_h, d, hidden)
        y = np.zeros((sq.steps, sq.batch, hidden), dtype=sq.x.dtype)
        for t in sq.order(d, ctx.attr("direction")):
            h_new = f(sq.clipped(xw[t] + h @ rt))
            y[t] = sq.emit(t, h_new)
            h = sq.keep(t, h_new, h)
        ys.append(y)
        hs.append(h)
    return sq.finish(ctx, ys, [hs])


# --------------------------------------------------------------------------- Resize


def _source_coords(
    mode: str, out: int, size: int, scale: float, roi: tuple[float, float]
) -> Array:
    """Input coordinate of every output index along one axis."""
    x = np.arange(out, dtype=np.float64)
    if mode == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        adjustment = out / (scale * size)
        offset = size / 2 * (1 - adjustment)
        return offset + (x + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if out > 1 else np.zeros_like(x)
    if mode == "align_corners":
        return x * (size - 1) / (out - 1) if out > 1 else np.zeros_like(x)
    if mode == "asymmetric":
        return x / scale
    if mode == "tf_crop_and_resize":
        start, end = roi
        if out > 1:
            return start * (size - 1) + x * (end - start) * (size - 1) / (out - 1)
        return np.full_like(x, 0.5 * (start + end) * (size - 1))
    raise UnsupportedKernel(f"Resize: coordinate_transformation_mode {mode} not supported")


def _nearest_index(coords: Array, mode: str) -> Array:
    if mode == "round_prefer_floor":
        return np.ceil(coords - 0.5)
    if mode == "round_prefer_ceil":
        return np.floor(coords + 0.5)
    if mode == "floor":
        return np.floor(coords)
    if mode == "ceil":
        return np.ceil(coords)
    raise UnsupportedKernel(f"Resize: nearest_mode {mode} not supported")


def _cubic_weights(t: Array, a: float) -> Array:
    """Keys cubic convolution weights for taps at floor-1 .. floor+2; t in [0, 1)."""
    d = np.stack([t + 1, t, 1 - t, 2 - t], axis=1)
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, far)


def _axis_taps(ctx: KernelContext, coords: Array, size: int) -> tuple[Array, Array]:
    """(indices [out, taps], weights [out, taps]) of one axis for the resize mode."""
    mode = ctx.attr("mode")
    if mode == "nearest":
        idx = _nearest_index(coords, ctx.attr("nearest_mode"))
        return np.clip(idx, 0, size - 1).astype(np.int64)[:, None], np.ones((len(coords), 1))
    base = np.floor(coords)
    t = coords - base
    if mode == "linear":
        offsets, weights = np.array([0, 1]), np.stack([1 - t, t], axis=1)
    elif mode == "cubic":
        offsets, weights = np.array([-1, 0, 1, 2]), _cubic_weights(t, ctx.attr("cubic_coeff_a"))
    else:
        raise UnsupportedKernel(f"Resize: mode {mode} not supported")
    idx = base.astype(np.int64)[:, None] + offsets[None, :]
    if mode == "cubic" and ctx.attr("exclude_outside"):
        weights = np.where((idx >= 0) & (idx < size), weights, 0.0)
        weights = weights / weights.sum(axis=1, keepdims=True)
    return np.clip(idx, 0, size - 1), weights


def _resize(
    ctx: KernelContext, x: Array, roi: Array | None = None, scales: Array | None = None,
    sizes: Array | None = None,
) -> Array:
    """Separable N-D Resize: one gather-and-weight pass per resized axis."""
    if ctx.attr("antialias") and ctx.attr("mode") != "nearest":
        raise UnsupportedKernel("Resize: antialias=1 not supported")
    r = x.ndim
    axes = [a % r for a in (ctx.attr("axes") or range(r))]
    out, sc = resize_output_shape(
        x.shape,
        None if scales is None or scales.size == 0 else [float(s) for s in scales],
        None if sizes is None or sizes.size == 0 else [int(s) for s in sizes],
        axes, ctx.attr("keep_aspect_ratio_policy"),
    )
    ctm = ctx.attr("coordinate_transformation_mode")
    roi_full = [(0.0, 1.0)] * r
    if roi is not None and roi.size and ctm == "tf_crop_and_resize":
        vals = [float(v) for v in roi.ravel()]
        k = len(vals) // 2
        for i, a in enumerate(axes if k == len(axes) else range(r)):
            roi_full[a] = (vals[i], vals[k + i])
    ct = np.float64 if x.dtype == np.float64 else np.float32
    y = x if x.dtype.kind == "f" and x.dtype not in _LOW_FLOATS else x.astype(ct)
    outside: Array | None = None
    for a in axes:
        if out[a] == x.shape[a] and sc[a] == 1.0 and ctm != "tf_crop_and_resize":
            continue
        coords = _source_coords(ctm, out[a], x.shape[a], sc[a], roi_full[a])
        idx, wts = _axis_taps(ctx, coords, x.shape[a])
        shape = [1] * r
        shape[a] = out[a]
        acc = None
        for k in range(idx.shape[1]):
            term = np.take(y, idx[:, k], axis=a)
            if ctx.attr("mode") != "nearest":
                term = term * wts[:, k].astype(y.dtype).reshape(shape)
            acc = term if acc is None else acc + term
        y = acc
        if ctm == "tf_crop_and_resize":
            bad = ((coords < 0) | (coords > x.shape[a] - 1)).reshape(shape)
            outside = bad if outside is None else outside | bad
    if outside is not None and outside.any():
        y = np.where(outside, y.dtype.type(ctx.attr("extrapolation_value")), y)
    if y.dtype != x.dtype:
        if x.dtype.kind in "iu":
            info = np.iinfo(x.dtype)
            y = np.clip(np.rint(y), info.min, info.max)
        y = y.astype(x.dtype)
    return y if y is not x else x.copy()


# --------------------------------------------------------------------------- GridSample


def _grid_sample(ctx: KernelContext, x: Array, grid: Array) -> Array:
    """GridSample over N-D spatial dims (NCHW), modes linear/nearest/cubic(2-D)."""
    _float_only("GridSample", x)
    mode, pad_mode = ctx.attr("mode"), ctx.attr("padding_mode")
    align = bool(ctx.attr("align_corners"))
    n, c = x.shape[:2]
    spatial = x.shape[2:]
    nd = len(spatial)
    xw = _work(x)
    g = _work(grid).astype(np.float64)
    # grid[..., 0] is the last (x / width) axis
    coords = []
    for i, size in enumerate(spatial):
        u = g[..., nd - 1 - i]
        pos = (u + 1) / 2 * (size - 1) if align else ((u + 1) * size - 1) / 2
        coords.append(_grid_pad(pos, size, pad_mode, align))
    out_sp = g.shape[1:-1]
    flat_x = xw.reshape(n, c, -1)
    batch = np.arange(n)[:, None]

    def gather(idx: list[Array]) -> tuple[Array, Array]:
        valid = np.ones(idx[0].shape, dtype=bool)
        lin = np.zeros(idx[0].shape, dtype=np.int64)
        for i, size in enumerate(spatial):
            valid &= (idx[i] >= 0) & (idx[i] < size)
            lin = lin * size + np.clip(idx[i], 0, size - 1)
        vals = flat_x[batch, :, lin.reshape(n, -1)]  # [N, P, C]
        return vals, valid.reshape(n, -1)

    if mode == "nearest":
        idx = [np.rint(p).astype(np.int64) for p in coords]
        vals, valid = gather(idx)
        y = vals * valid[..., None]
    elif mode == "linear":
        base = [np.floor(p).astype(np.int64) for p in coords]
        frac = [p - np.floor(p) for p in coords]
        y = 0
        for corner in itertools.product((0, 1), repeat=nd):
            wgt = np.ones(coords[0].shape)
            for i, o in enumerate(corner):
                wgt = wgt * (frac[i] if o else 1 - frac[i])
            vals, valid = gather([b + o for b, o in zip(base, corner, strict=True)])
            y = y + vals * (valid * wgt.reshape(n, -1))[..., None].astype(vals.dtype)
    else:
        raise UnsupportedKernel(f"GridSample: mode {mode} not supported")
    y = np.moveaxis(np.asarray(y), -1, 1).reshape(n, c, *out_sp)
    return y.astype(x.dtype, copy=False)


def _grid_pad(pos: Array, size: int, pad_mode: str, align: bool) -> Array:
    if pad_mode == "zeros":
        return pos
    if pad_mode == "border":
        return np.clip(pos, 0, size - 1)
    if pad_mode == "reflection":
        lo, hi = (0.0, size - 1.0) if align else (-0.5, size - 0.5)
        span = hi - lo
        if span <= 0:
            return np.zeros_like(pos)
        d = np.abs(pos - lo) % (2 * span)
        refl = np.where(d > span, 2 * span - d, d) + lo
        return np.clip(refl, 0, size - 1)
    raise UnsupportedKernel(f"GridSample: padding_mode {pad_mode} not supported")


KERNELS = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "MaxPool": _max_pool,
    "AveragePool": _average_pool,
    "LpPool": _lp_pool,
    "GlobalAveragePool": _global_average_pool,
    "GlobalMaxPool": _global_max_pool,
    "GlobalLpPool": _global_lp_pool,
    "BatchNormalization": _batch_norm,
    "InstanceNormalization": _instance_norm,
    "LayerNormalization": _layer_norm,
    "GroupNormalization": _group_norm,
    "LRN": _lrn,
    "MeanVarianceNormalization": _mvn,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Softmax": _softmax,
    "LogSoftmax": _log_softmax,
    "Hardmax": _hardmax,
    "Dropout": _dropout,
    "LSTM": _lstm,
    "GRU": _gru,
    "RNN": _rnn,
    "Resize": _resize,
    "Einsum": _einsum,
    "GridSample": _grid_sample,
}
