"""NumPy kernels of the neural-network ops (ONNX semantics, see ``ir/ops/nn.py``).

Layout: kernels compute in NCHW; for ``format="NHWC"`` the channel axis is
moved in front and back again (per-channel ops broadcast on the last axis
directly). Precision: float32 stays float32 throughout; float16/bfloat16 data
are computed in float32 and cast back (as onnxruntime's CPU kernels do).

Conv: 1-D and 2-D convs (depthwise ones included) are one GEMM per kernel
row over ``kw`` shifted copies of the input (``_RowTaps``), unless a group
has more outputs than ``kw`` x inputs (the first conv of an RGB network),
where im2col (one strided copy per kernel tap) plus one batched matmul over
a [group, ...] layout copies less; 3-D convs use im2col too, 1x1 convs are a
plain matmul. Pools accumulate over the kernel taps with whole-tensor vector
ops. Prepared weights are cached per node in ``ctx.cache`` while the weight
input is the same array object, and so are work buffers (per thread): a fresh
multi-megabyte temporary per call costs page faults comparable to the work.
"""

from __future__ import annotations

import itertools
import math
import threading
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
_FAST_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))

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


class _Phases:
    """A strided window over a padded input, read as contiguous runs of flat buffers.

    The padded input is split into its ``prod(strides)`` polyphase components
    (every s-th element along each spatial axis, starting at 0..s-1), each
    stored flat in one row of a scratch buffer whose padding stays at the fill
    value across calls. Output position ``(o0, o1, ...)`` of kernel tap ``t``
    reads component ``phase[t]`` at ``offset[t] + o0 * rows[0] + o1 * rows[1] ...``,
    so one tap for all outputs is the run ``[offset, offset + length)``.
    Results are computed on whole component rows (``out[0] x comp[1:]``) and the
    columns past ``out`` cropped at the end (``waste`` is that overhead).
    """

    def __init__(
        self, spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
        dil: Sequence[int], begin: Sequence[int], end: Sequence[int], out: Sequence[int],
    ) -> None:
        nd = len(spatial)
        padded = [n + b + e for n, b, e in zip(spatial, begin, end, strict=True)]
        self.comp = [-(-p // s) for p, s in zip(padded, strides, strict=True)]
        self.rows = [math.prod(self.comp[i + 1:]) for i in range(nd)]
        self.out = list(out)
        self.length = out[0] * self.rows[0]
        self.waste = self.length / max(math.prod(out), 1)
        taps = list(itertools.product(*(range(k) for k in kernel)))
        phase_of = [tuple(t * d % s for t, d, s in zip(tap, dil, strides, strict=True))
                    for tap in taps]
        self.phases = sorted(set(phase_of))
        index = {ph: i for i, ph in enumerate(self.phases)}
        self.tap_phase = [index[ph] for ph in phase_of]
        self.tap_offset = [
            sum(t * d // s * r for t, d, s, r in zip(tap, dil, strides, self.rows, strict=True))
            for tap in taps
        ]
        self.size = max(math.prod(self.comp), max(self.tap_offset) + self.length)
        self.copies = []  # per phase: (destination slices in comp space, source slices)
        for ph in self.phases:
            dst, src = [], []
            for a, n, b, e, s, q in zip(ph, spatial, begin, end, strides, self.comp, strict=True):
                k0 = max(0, -(-(b - a) // s))
                i0 = a + s * k0 - b
                count = min(len(range(i0, n, s)), -(-(n + b + e - a) // s) - k0, q - k0)
                count = max(count, 0)
                dst.append(slice(k0, k0 + count))
                src.append(slice(i0, i0 + (count - 1) * s + 1 if count else i0, s))
            self.copies.append((tuple(dst), tuple(src)))

    def fill(self, ctx: KernelContext, x: Array, value: Any) -> Array:
        """Scratch buffer [phases, *lead, size] holding ``x``'s components."""
        lead = x.shape[:-len(self.comp)]
        key = ("phases", tuple(comp for dst, _ in self.copies for comp in _slices_key(dst)),
               tuple(self.comp))  # fmt: skip
        buf = _scratch(ctx, key, (len(self.phases), *lead, self.size), x.dtype, value)
        inner = math.prod(self.comp)
        for p, (dst, src) in enumerate(self.copies):
            grid = buf[p, ..., :inner].reshape(*lead, *self.comp)
            grid[(Ellipsis, *dst)] = x[(Ellipsis, *src)]
        return buf

    def run(self, buf: Array, tap: int) -> Array:
        """Tap ``tap`` at every output position: a view [*lead, length] of ``buf``."""
        off = self.tap_offset[tap]
        return buf[self.tap_phase[tap], ..., off: off + self.length]

    def crop(self, y: Array, add: Array | None = None) -> Array:
        """Contiguous [*lead, *out] from flat results [*lead, length] (plus ``add``,
        a per-channel [C, 1] vector broadcast over the output positions)."""
        lead = y.shape[:-1]
        full = y.reshape(*lead, self.out[0], *self.comp[1:])
        view = full[(Ellipsis, *(slice(0, o) for o in self.out[1:]))]
        if add is None:
            return view if view.flags.c_contiguous else np.ascontiguousarray(view)
        res = np.empty(view.shape, dtype=y.dtype)
        np.add(view, add.reshape(-1, *([1] * len(self.out))), out=res)
        return res


class _RowTaps:
    """A 1-D/2-D conv as one GEMM per kernel row, over shifted copies of the input.

    ``kw`` copies of the input, copy ``tx`` shifted left by ``tx * dil_w`` and
    subsampled by ``stride_w`` (zeros where the padding is), are stacked per
    group as ``[kw * Cg, rows, Wo]``; rows are split into ``stride_h``
    phases. Kernel row ``ty`` then reads the ``Ho * Wo`` contiguous elements of
    every stacked plane starting at row ``ty * dil_h // stride_h`` of phase
    ``ty * dil_h % stride_h``: a strided [kw * Cg, Ho * Wo] matrix BLAS takes
    as is, multiplied by the weights of that kernel row [Mg, kw * Cg]. The
    ``kh`` products are summed. Compared with im2col this copies the input
    ``kw`` times instead of ``kh * kw`` times, and the result is already in
    [M, Ho, Wo] layout: ResNet-50's 3x3 convs took 6-13% less time than with
    im2col (2 BLAS threads); MobileNetV2 ran 16% faster with its depthwise
    convs here (per-channel [1, kw] x [kw, Ho * Wo] products) than as
    tap-by-tap multiply-adds (1 BLAS thread). One GEMM per tap (``kh * kw``
    GEMMs with K = Cin on the padded flat input, no copies) was slower than
    row taps on every ResNet layer shape, and than im2col on the 14x14 and
    7x7 ones.

    The scratch buffer is cached per input shape and thread; only the parts
    that hold input are rewritten each call, the padding stays zero.
    """

    def __init__(self, x_shape: tuple[int, ...], plan: _ConvPlan) -> None:
        lift = 2 - len(plan.kernel)  # a 1-D conv is a 2-D one with a unit height
        kh, kw = [1] * lift + list(plan.kernel)
        sh, sw = [1] * lift + list(plan.strides)
        dh, dw = [1] * lift + list(plan.dil)
        pt, pl = [0] * lift + list(plan.begin)
        ho, wo = [1] * lift + list(plan.out)
        h, w = [1] * lift + list(x_shape[2:])
        self.kernel, self.out = (kh, kw), (ho, wo)
        self.in2d = (h, w)
        offs = [(ty * dh % sh, ty * dh // sh) for ty in range(kh)]
        self.phases = sorted({a for a, _ in offs})
        self.taps = [(self.phases.index(a), r) for a, r in offs]  # per kernel row
        self.hq = ho + max(r for _, r in offs)
        self.copies = []  # (phase index, tx, rows in hq, cols in wo, input rows, input cols)
        for pi, a in enumerate(self.phases):
            r0 = max(0, -(-(pt - a) // sh))
            r1 = min(self.hq, (pt + h - 1 - a) // sh + 1)
            for tx in range(kw):
                c0 = max(0, -(-(pl - tx * dw) // sw))
                c1 = min(wo, (pl + w - 1 - tx * dw) // sw + 1)
                if r1 <= r0 or c1 <= c0:
                    continue
                i0, j0 = a + sh * r0 - pt, c0 * sw + tx * dw - pl
                self.copies.append((
                    pi, tx, slice(r0, r1), slice(c0, c1),
                    slice(i0, i0 + (r1 - r0 - 1) * sh + 1, sh),
                    slice(j0, j0 + (c1 - c0 - 1) * sw + 1, sw),
                ))  # fmt: skip

    def fill(self, ctx: KernelContext, x: Array, groups: int) -> Array:
        """Scratch [N, phases, G, kw, Cg, hq, Wo] holding the shifted input copies."""
        n, c = x.shape[:2]
        shape = (n, len(self.phases), groups, self.kernel[1], c // groups, self.hq, self.out[1])
        key = ("rowtaps", tuple((pi, tx, *_slices_key((rows, cols)))
                                for pi, tx, rows, cols, _, _ in self.copies))  # fmt: skip
        buf = _scratch(ctx, key, shape, x.dtype, 0)
        src = x.reshape(n, groups, c // groups, *self.in2d)
        for pi, tx, rows, cols, irows, icols in self.copies:
            buf[:, pi, :, tx, :, rows, cols] = src[..., irows, icols]
        return buf


def _conv_rows(
    ctx: KernelContext, plan: _ConvPlan, rt: _RowTaps, x: Array, w: Array, bias: Array | None
) -> Array:
    """Sum over kernel rows of weights-row x shifted-copies GEMMs (see ``_RowTaps``)."""
    n = x.shape[0]
    g, cg, mg = plan.groups, plan.cg, plan.mg
    (kh, kw), (ho, wo) = rt.kernel, rt.out
    length = ho * wo

    def prepare() -> Array:  # [kh, G, Mg, kw * Cg], columns ordered (tx, c)
        wk = _work(w).reshape(g, mg, cg, kh, kw).transpose(3, 0, 1, 4, 2)
        return np.ascontiguousarray(wk).reshape(kh, g, mg, kw * cg)

    wr = _cached(ctx, "wrows", [w], prepare)
    buf = rt.fill(ctx, x, g)
    # [phases, N, G, kw * Cg, hq * Wo]; with N = G = 1 plain 2-D GEMMs
    planes = buf.reshape(n, len(rt.phases), g, kw * cg, rt.hq * wo).swapaxes(0, 1)
    if n == 1 and g == 1:
        wr, planes = wr[:, 0], planes[:, 0, 0]
        y = np.empty((mg, length), dtype=x.dtype)
    else:
        y = np.empty((n, g, mg, length), dtype=x.dtype)
    # the other rows' products go to a reused buffer: a fresh multi-MB temporary
    # per row costs more in page faults than the GEMM itself (depthwise 112x112)
    part = _scratch(ctx, "rowpart", y.shape, y.dtype) if kh > 1 else y
    for ty, (pi, r) in enumerate(rt.taps):
        np.matmul(wr[ty], planes[pi, ..., r * wo: r * wo + length], out=y if ty == 0 else part)
        if ty:
            y += part
    return _add_bias(y.reshape(n, plan.m, length), bias)


def _scratch(
    ctx: KernelContext, key: Any, shape: tuple[int, ...], dtype: Any, fill: Any = None
) -> Array:
    """A work buffer for this call: the runtime's shared pool (``ctx.scratch``).

    With ``fill`` the buffer starts filled, and the parts a caller never writes
    keep that value from call to call; ``key`` must then name the write
    pattern. Contexts without a pool keep their buffers per node.
    """
    lend = getattr(ctx, "scratch", None)
    if lend is not None:
        return lend(key, shape, dtype, fill)
    full = ("scratch", key, tuple(shape), np.dtype(dtype).str, fill, threading.get_ident())
    buf = ctx.cache.get(full)
    if buf is None:
        buf = np.empty(shape, dtype) if fill is None else np.full(shape, fill, dtype)
        ctx.cache[full] = buf
    return buf


def _slices_key(slices: Sequence[slice]) -> tuple[int | None, ...]:
    """A hashable stand-in for ``slices`` (slice objects are unhashable before 3.12)."""
    return tuple(v for sl in slices for v in (sl.start, sl.stop, sl.step))


class _ConvPlan:
    """Geometry of one Conv call (cached per input shape)."""

    def __init__(self, ctx: KernelContext, x_shape: tuple[int, ...], w: Array) -> None:
        nd = len(x_shape) - 2
        self.kernel = list(w.shape[2:])
        self.strides = _ints_or(ctx.attr("strides"), nd, 1)
        self.dil = _ints_or(ctx.attr("dilations"), nd, 1)
        self.begin, self.end, self.out = resolve_pads(
            x_shape[2:], self.kernel, self.strides, self.dil, ctx.attr("pads"),
            ctx.attr("auto_pad"),
        )
        n, c = x_shape[:2]
        self.groups = ctx.attr("group")
        self.m = w.shape[0]
        self.cg, self.mg = c // self.groups, self.m // self.groups
        if self.cg * self.groups != c or w.shape[1] != self.cg:
            raise ValueError(
                f"Conv: input channels {c} do not match W {w.shape} x group {self.groups}"
            )
        self.depthwise = self.groups == c and self.groups > 1 and math.prod(self.kernel) > 1
        self.pointwise = all(k == 1 for k in self.kernel) and not any(self.begin + self.end)
        self.phases: _Phases | None = None
        self.rows: _RowTaps | None = None
        if self.pointwise or min(self.begin + self.end) < 0 or min(self.out) <= 0:
            return
        if nd <= 2 and self.mg <= self.kernel[-1] * self.cg:
            self.rows = _RowTaps(x_shape, self)  # cheaper than im2col unless Cin is small
            return
        ph = _Phases(x_shape[2:], self.kernel, self.strides, self.dil, self.begin,
                     self.end, self.out)
        if self.depthwise or ph.waste <= 1.1:
            self.phases = ph


def _conv_plan(ctx: KernelContext, x: Array, w: Array) -> _ConvPlan:
    key = ("plan", x.shape, w.shape)
    plan = ctx.cache.get(key)
    if plan is None:
        plan = ctx.cache[key] = _ConvPlan(ctx, x.shape, w)
    return plan


@_channels_first
def _conv(ctx: KernelContext, x: Array, w: Array, b: Array | None = None) -> Array:
    """Conv (NCHW): kernel-row GEMMs (1-D/2-D), else im2col or depthwise taps; 1x1 as matmul."""
    _float_only("Conv", x)
    dtype = x.dtype
    x = _work(x)
    plan = _conv_plan(ctx, x, w)
    n = x.shape[0]
    bias = None if b is None else _cached(ctx, "bias", [b], lambda: _work(b).reshape(-1, 1))
    if plan.rows is not None:
        y = _conv_rows(ctx, plan, plan.rows, x, w, bias)
    elif plan.depthwise:
        y = _depthwise(ctx, plan, x, w, bias)
    elif plan.pointwise:
        y = _pointwise(ctx, plan, x, w, bias)
    elif plan.phases is not None:
        y = _conv_flat(ctx, plan, plan.phases, x, w, bias)
    else:
        y = _conv_im2col(ctx, plan, x, w, bias)
    return y.reshape(n, plan.m, *plan.out).astype(dtype, copy=False)


def _add_bias(y: Array, bias: Array | None) -> Array:
    """``y`` [N, M, L] (fresh) plus the per-channel ``bias`` [M, 1], in place."""
    if bias is not None:
        y += bias
    return y


def _pointwise(
    ctx: KernelContext, plan: _ConvPlan, x: Array, w: Array, bias: Array | None
) -> Array:
    n, c = x.shape[:2]
    g = plan.groups
    if any(s != 1 for s in plan.strides):
        sub = x[(Ellipsis, *(slice(None, None, s) for s in plan.strides))]
        x = _scratch(ctx, "strided", sub.shape, sub.dtype)
        np.copyto(x, sub)
    length = math.prod(plan.out)
    if g == 1:
        wm = _cached(ctx, "w1x1", [w], lambda: _work(w).reshape(plan.m, c))
        y = np.matmul(wm, x.reshape(n, c, length)) if n > 1 else wm @ x.reshape(c, length)
        return _add_bias(y.reshape(n, plan.m, length), bias)
    wm = _cached(ctx, "w1x1g", [w], lambda: _work(w).reshape(g, plan.mg, plan.cg))
    y = np.matmul(wm, x.reshape(n, g, plan.cg, length))
    return _add_bias(y.reshape(n, plan.m, length), bias)


def _conv_flat(
    ctx: KernelContext, plan: _ConvPlan, ph: _Phases, x: Array, w: Array, bias: Array | None
) -> Array:
    """im2col from contiguous runs of the polyphase buffer, one matmul, crop."""
    n, c = x.shape[:2]
    k = math.prod(plan.kernel)
    g, cg, mg = plan.groups, plan.cg, plan.mg
    buf = ph.fill(ctx, x, 0)
    cols = _scratch(ctx, "cols", (n, c, k, ph.length), x.dtype)
    for t in range(k):
        cols[:, :, t] = ph.run(buf, t)
    if g == 1:
        wm = _cached(ctx, "wcol", [w], lambda: _work(w).reshape(plan.m, c * k))
        y = wm @ cols.reshape(c * k, ph.length) if n == 1 else np.matmul(
            wm, cols.reshape(n, c * k, ph.length))
    else:
        wm = _cached(ctx, "wcolg", [w], lambda: _work(w).reshape(g, mg, cg * k))
        y = np.matmul(wm, cols.reshape(n, g, cg * k, ph.length))
    return ph.crop(y.reshape(n, plan.m, ph.length), bias)


def _conv_im2col(
    ctx: KernelContext, plan: _ConvPlan, x: Array, w: Array, bias: Array | None
) -> Array:
    """im2col with one strided copy per kernel tap (small outputs, negative pads)."""
    n, c = x.shape[:2]
    k = math.prod(plan.kernel)
    g, cg, mg = plan.groups, plan.cg, plan.mg
    xp = _pad(x, plan.begin, plan.end)
    length = math.prod(plan.out)
    cols = _scratch(ctx, "cols", (n, c, k, *plan.out), x.dtype)
    _im2col(xp, plan.kernel, plan.strides, plan.dil, plan.out, cols)
    wm = _cached(ctx, "wcolg", [w], lambda: _work(w).reshape(g, mg, cg * k))
    if g == 1 and n == 1:
        y = wm[0] @ cols.reshape(c * k, length)
    else:
        y = np.matmul(wm, cols.reshape(n, g, cg * k, length))
    return _add_bias(y.reshape(n, plan.m, length), bias)


def _im2col(
    xp: Array, kernel: Sequence[int], strides: Sequence[int], dil: Sequence[int],
    out: Sequence[int], cols: Array,
) -> Array:
    """Columns [N, C, prod(kernel), *out] into ``cols``: one strided copy per kernel tap."""
    for i, tap in enumerate(itertools.product(*(range(k) for k in kernel))):
        cols[:, :, i] = xp[(slice(None), slice(None), *_tap_slices(tap, dil, strides, out))]
    return cols


def _depthwise(
    ctx: KernelContext, plan: _ConvPlan, x: Array, w: Array, bias: Array | None
) -> Array:
    """Depthwise conv: sum over taps of a shifted input run times per-channel weights."""
    n, c = x.shape[:2]
    mult = plan.m // c
    k = math.prod(plan.kernel)

    def prepare() -> Array:  # [taps, C, mult, 1] (mult axis dropped when 1)
        wt = _work(w).reshape(c, mult, k).transpose(2, 0, 1)
        return np.ascontiguousarray(wt if mult > 1 else wt[:, :, 0])[..., None]

    wts = _cached(ctx, "wdw", [w], prepare)
    ph = plan.phases
    if ph is None:  # negative pads: pad/crop first, then the same on the result
        xp = _pad(x, plan.begin, plan.end)
        zero = [0] * len(plan.out)
        ph = _Phases(xp.shape[2:], plan.kernel, plan.strides, plan.dil, zero, zero, plan.out)
        x = xp
    buf = ph.fill(ctx, x, 0)
    shape = (n, c, ph.length) if mult == 1 else (n, c, mult, ph.length)
    y = np.empty(shape, dtype=x.dtype)
    tmp = np.empty(shape, dtype=x.dtype)
    for t in range(k):
        src = ph.run(buf, t)
        if mult > 1:
            src = src[:, :, None]
        if t == 0:
            np.multiply(src, wts[t], out=y)
        else:
            np.multiply(src, wts[t], out=tmp)
            y += tmp
    y = y.reshape(n, plan.m, ph.length)
    return ph.crop(y, bias)


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


def _pool_phases(ctx: KernelContext, x: Array) -> tuple[_Window, _Phases | None]:
    """Window geometry and, unless pads are negative, its polyphase reader (cached)."""
    key = ("pool", x.shape)
    hit = ctx.cache.get(key)
    if hit is None:
        win = _Window(ctx, x.shape[2:])
        ph = None
        if min(win.begin + win.end_ext) >= 0 and min(win.out) > 0:
            ph = _Phases(x.shape[2:], win.kernel, win.strides, win.dil, win.begin,
                         win.end_ext, win.out)
        hit = ctx.cache[key] = (win, ph)
    return hit


def _reduce_taps(
    ctx: KernelContext, x: Array, fill: Any, op: Callable[..., Array],
    fn: Callable[..., Array] | None = None,
) -> tuple[_Window, Array]:
    """``op``-reduce (np.maximum / np.add) ``fn`` of every tap's input: [N, C, *out]."""
    win, ph = _pool_phases(ctx, x)
    if ph is None:
        xp = _pad(x, win.begin, win.end_ext, fill)
        acc: Array | None = None
        for tap in win.taps:
            xs = xp[win.slices(tap)]
            term = xs.copy() if fn is None else fn(xs)
            acc = term if acc is None else op(acc, term, out=acc)
        assert acc is not None
        return win, acc
    buf = ph.fill(ctx, x, fill)
    y = np.empty((*x.shape[:2], ph.length), dtype=x.dtype)
    tmp = np.empty_like(y) if fn is not None else None
    for t in range(len(win.taps)):
        src = ph.run(buf, t)
        if fn is not None:
            src = fn(src, out=tmp)
        if t == 0:
            np.copyto(y, src)
        else:
            op(y, src, out=y)
    return win, ph.crop(y)


def _min_value(dtype: np.dtype) -> Any:
    return -np.inf if dtype.kind == "f" else np.iinfo(dtype).min


@_channels_first
def _max_pool(ctx: KernelContext, x: Array) -> Array | tuple[Array, Array]:
    """MaxPool (NCHW) by a running maximum over the kernel taps; optional Indices."""
    want_idx = ctx.num_outputs > 1
    dtype = x.dtype
    x = _work(x)
    if not want_idx:
        _, y = _reduce_taps(ctx, x, _min_value(x.dtype), np.maximum)
        return y.astype(dtype, copy=False)
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
    win, acc = _reduce_taps(ctx, _work(x), 0, np.add)
    include = bool(ctx.attr("count_include_pad"))
    key = f"avgcnt{x.shape}{include}"
    if key not in ctx.cache:
        ctx.cache[key] = np.maximum(win.counts(include), 1).astype(acc.dtype)
    acc /= ctx.cache[key]
    return acc.astype(dtype, copy=False)


def _lp_power(p: int) -> Callable[..., Array]:
    if p == 1:
        return np.abs
    if p == 2:
        return np.square

    def power(v: Array, out: Array | None = None) -> Array:
        r = np.abs(v, out=out)
        return np.power(r, r.dtype.type(p), out=r)

    return power


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
    _, acc = _reduce_taps(ctx, _work(x), 0, np.add, _lp_power(p))
    return _lp_root(acc, p).astype(dtype, copy=False)


def _spatial_axes(ctx: KernelContext, x: Array) -> tuple[int, ...]:
    return tuple(range(1, x.ndim - 1)) if _nhwc(ctx) else tuple(range(2, x.ndim))


def _global_average_pool(ctx: KernelContext, x: Array) -> Array:
    _float_only("GlobalAveragePool", x)
    if not _nhwc(ctx) and x.flags.c_contiguous and x.ndim > 2:
        flat = _work(x).reshape(*x.shape[:2], -1)  # one contiguous run per channel
        y = np.mean(flat, axis=-1).reshape(*x.shape[:2], *([1] * (x.ndim - 2)))
        return y.astype(x.dtype, copy=False)
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
    xw = _work(x)
    out = x if xw is x and ctx.reusable(0) else None
    y = np.multiply(xw, a.reshape(shape), out=out)
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
    if ctx.num_outputs == 1 and x.dtype in _FAST_FLOATS and scale.dtype == x.dtype and (
        b is None or b.dtype == x.dtype
    ):
        return _layer_norm_fast(ctx, x, scale, b, axis)
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


def _layer_norm_fast(
    ctx: KernelContext, x: Array, scale: Array, b: Array | None, axis: int
) -> Array:
    """Single-output float32/float64 LayerNormalization with few passes over ``x``."""
    rows = math.prod(x.shape[:axis])
    n = math.prod(x.shape[axis:])
    x2 = x.reshape(rows, n)
    mean = np.mean(x2, axis=1, keepdims=True)
    out = x2 if ctx.reusable(0) and x.flags.c_contiguous else None
    c = np.subtract(x2, mean, out=out)
    var = np.einsum("ij,ij->i", c, c)[:, None]
    var *= x.dtype.type(1.0 / n)
    var += x.dtype.type(ctx.attr("epsilon"))
    inv = np.sqrt(var, out=var)
    np.divide(1, inv, out=inv)
    c *= inv
    c *= np.broadcast_to(scale, x.shape[axis:]).reshape(1, n)
    if b is not None:
        c += np.broadcast_to(b, x.shape[axis:]).reshape(1, n)
    return c.reshape(x.shape)


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
    out = x if xw is x and ctx.reusable(0) and x.dtype in _FAST_FLOATS else None
    e = np.subtract(xw, np.max(xw, axis=axis, keepdims=True), out=out)
    np.exp(e, out=e)
    s = np.sum(e, axis=axis, keepdims=True)
    e /= s
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
        # ONNX: length_resized is size * scale, unrounded when scales are given
        # (with sizes, scale = out / size and this is out - 1)
        length = size * scale
        return x * (size - 1) / (length - 1) if out > 1 and length != 1 else np.zeros_like(x)
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
