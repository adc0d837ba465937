"""NumPy kernels of the default-domain quantization ops (semantics in ``ir/ops/quant.py``).

Rounding is round-half-to-even (``np.rint``) everywhere. QuantizeLinear divides in float32
when the scale is float16/bfloat16 and no ``precision`` is given (onnxruntime's choice: one
rounding instead of a float16 quotient rounded again). Integer convolutions and
matmuls accumulate exactly: operands shifted by their zero points are integers of at most
17 bits, so their products summed in float64 (BLAS) stay below 2**53 and are exact; the
float conv kernel (``kernels.nn``) is reused on those float64 operands.

Requantization follows onnxruntime's CPU kernels so that results match bit for bit:
``multiplier = float32(x_scale * w_scale / y_scale)``; ``y = clamp(rint(float32(acc) *
multiplier) + y_zero_point)``.
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np

from converter.executor.kernels.nn import KERNELS as NN_KERNELS
from converter.executor.registry import KernelContext, UnsupportedKernel
from ir.dtypes import DataType

__all__ = [
    "KERNELS",
    "dequantize",
    "int_conv",
    "int_matmul",
    "qrange",
    "quantize",
    "requantize",
    "shifted",
]

Array = np.ndarray
_F8 = frozenset(
    np.dtype(t)
    for t in (
        ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e4m3fnuz,
        ml_dtypes.float8_e5m2, ml_dtypes.float8_e5m2fnuz, ml_dtypes.float4_e2m1fn,
    )
)
_INT4 = {np.dtype(ml_dtypes.int4): (-8, 7), np.dtype(ml_dtypes.uint4): (0, 15)}
_LOW = frozenset({np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)})

# --------------------------------------------------------------------------- helpers


def qrange(dtype: np.dtype) -> tuple[int, int]:
    """Saturation bounds of an integer quantized type."""
    dtype = np.dtype(dtype)
    if dtype in _INT4:
        return _INT4[dtype]
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def _param(p: Array | None, x: Array, axis: int, block: int) -> Array | None:
    """Broadcast a scale / zero point against ``x`` (per tensor, per axis or blocked)."""
    if p is None or p.ndim == 0 or (p.size == 1 and p.ndim <= 1) or x.ndim == 0:
        return None if p is None else p.reshape(())
    axis = axis + x.ndim if axis < 0 else axis
    if p.ndim == 1 and block <= 0:
        shape = [1] * x.ndim
        shape[axis] = p.shape[0]
        return p.reshape(shape)
    if block <= 0:
        raise UnsupportedKernel(f"quantization parameter of shape {p.shape} needs block_size")
    return np.repeat(p, block, axis=axis).take(np.arange(x.shape[axis]), axis=axis)


def shifted(q: Array, zp: Array | None) -> Array:
    """``q - zp`` as float64 (exact for integer types of up to 32 bits)."""
    if q.dtype in _F8 or q.dtype.kind == "f":
        diff = q.astype(np.float64)
        return diff if zp is None else diff - zp.astype(np.float64)
    diff = q.astype(np.int64)
    if zp is not None:
        diff = diff - zp.astype(np.int64)
    return diff.astype(np.float64)


def quantize(v: Array, zp: Array | None, out: np.dtype, saturate: bool = True) -> Array:
    """Already scaled ``v`` (float) -> ``out``: round, add zero point, saturate."""
    out = np.dtype(out)
    if out in _F8:
        v32 = v.astype(np.float32)
        if zp is not None:
            v32 = v32 + zp.astype(np.float32)
        if saturate or out == np.dtype(ml_dtypes.float4_e2m1fn):
            top = float(ml_dtypes.finfo(out).max)
            v32 = np.where(np.isnan(v32), v32, np.clip(v32, -top, top))
        with np.errstate(over="ignore", invalid="ignore"):
            return v32.astype(out)
    lo, hi = qrange(out)
    r = np.rint(v).astype(np.float64)
    if zp is not None:
        r = r + zp.astype(np.float64)
    r = np.nan_to_num(np.clip(r, lo, hi), nan=0.0)
    return r.astype(np.int64).astype(out)


def requantize(acc: Array, multiplier: Array, zp: Array | None, out: np.dtype) -> Array:
    """onnxruntime's MlasRequantizeOutput: rint(float32(acc) * multiplier) + zp, clamped."""
    v = acc.astype(np.float32) * multiplier.astype(np.float32)
    return quantize(v, zp, out)


def dequantize(q: Array, scale: Array, zp: Array | None, out: np.dtype) -> Array:
    """``(q - zp) * scale`` computed in float32 and cast to ``out``."""
    diff = shifted(q, zp).astype(np.float32)
    return (diff * scale.astype(np.float32)).astype(out, copy=False)


def _f64_cached(ctx: KernelContext, key: str, q: Array, zp: Array | None) -> Array:
    """``shifted(q, zp)``, kept in ctx.cache while q and zp are the same arrays."""
    hit = ctx.cache.get(key)
    if hit is not None and hit[0] is q and hit[1] is zp:
        return hit[2]
    value = shifted(q, zp)
    ctx.cache[key] = (q, zp, value)
    return value


def _channel_zp(zp: Array | None, w: Array) -> Array | None:
    """A per-output-channel weight zero point shaped [M, 1, ...] against W."""
    if zp is None or zp.size == 1:
        return None if zp is None else zp.reshape(())
    return zp.reshape(-1, *([1] * (w.ndim - 1)))


def int_conv(
    ctx: KernelContext, x: Array, w: Array, x_zp: Array | None, w_zp: Array | None
) -> Array:
    """Exact int64 conv of ``x - x_zp`` by ``w - w_zp`` (attributes read from ``ctx``)."""
    if x_zp is not None and x_zp.size != 1:
        raise UnsupportedKernel(f"{ctx.node.op}: per-channel x_zero_point not supported")
    xs = shifted(x, None if x_zp is None else x_zp.reshape(()))
    ws = _f64_cached(ctx, "quant_w", w, _channel_zp(w_zp, w))
    y = NN_KERNELS["Conv"](ctx, xs, ws)
    return np.rint(y).astype(np.int64)


def _matmul_zp(zp: Array | None, row: bool) -> Array | None:
    """Zero point broadcast per row of A ([..., M] -> [..., M, 1]) or per column of B."""
    if zp is None or zp.ndim == 0 or zp.size == 1:
        return None if zp is None else zp.reshape(())
    return zp[..., :, None] if row else zp[..., None, :]


def int_matmul(a: Array, b: Array, a_zp: Array | None, b_zp: Array | None) -> Array:
    """Exact int64 matmul of ``a - a_zp`` by ``b - b_zp`` (per-row / per-column zps)."""
    aa = shifted(a, _matmul_zp(a_zp, row=True))
    bb = shifted(b, _matmul_zp(b_zp, row=False))
    return np.rint(np.matmul(aa, bb)).astype(np.int64)


def _out_type(code: int, fallback: np.dtype) -> np.dtype:
    return DataType(code).numpy if code else np.dtype(fallback)


def _scalar(p: Array | None, what: str, op: str) -> Array | None:
    if p is not None and p.size != 1:
        raise UnsupportedKernel(f"{op}: {what} must be a scalar (per-tensor)")
    return None if p is None else p.reshape(())


# --------------------------------------------------------------------------- kernels


def _quantize_linear(
    ctx: KernelContext, x: Array, scale: Array, zp: Array | None = None
) -> Array:
    out = _out_type(ctx.attr("output_dtype"), zp.dtype if zp is not None else np.uint8)
    prec = ctx.attr("precision")
    # without an explicit precision, half-float scales divide in float32 as onnxruntime does
    work = DataType(prec).numpy if prec else np.result_type(scale.dtype, np.float32)
    if work.kind != "f" and work not in _LOW:
        work = np.dtype(np.float32)
    axis, block = ctx.attr("axis"), ctx.attr("block_size")
    s = _param(scale, x, axis, block)
    z = _param(zp, x, axis, block)
    with np.errstate(divide="ignore", invalid="ignore"):
        v = x.astype(work) / s.astype(work)  # type: ignore[union-attr]
    return quantize(v.astype(np.float32), z, out, bool(ctx.attr("saturate")))


def _dequantize_linear(
    ctx: KernelContext, x: Array, scale: Array, zp: Array | None = None
) -> Array:
    out = _out_type(ctx.attr("output_dtype"), scale.dtype)
    axis, block = ctx.attr("axis"), ctx.attr("block_size")
    s = _param(scale, x, axis, block)
    z = _param(zp, x, axis, block)
    return dequantize(x, s, z, out)  # type: ignore[arg-type]


def dynamic_params(x: Array) -> tuple[np.float32, np.uint8]:
    """onnxruntime's uint8 (scale, zero point) of a float tensor's range (0 included)."""
    lo = np.float32(min(float(x.min()) if x.size else 0.0, 0.0))
    hi = np.float32(max(float(x.max()) if x.size else 0.0, 0.0))
    scale = np.float32(1.0) if hi == lo else np.float32((hi - lo) / np.float32(255.0))
    zp = np.rint(np.clip(np.float32(0.0) - lo / scale, 0.0, 255.0))
    return scale, np.uint8(zp)


def _dynamic_quantize_linear(ctx: KernelContext, x: Array) -> tuple[Array, Array, Array]:
    if x.dtype != np.float32:
        raise UnsupportedKernel(f"DynamicQuantizeLinear: dtype {x.dtype} not supported")
    scale, zp = dynamic_params(x)
    y = quantize(x / scale, np.asarray(zp), np.dtype(np.uint8))
    return y, np.asarray(scale, np.float32), np.asarray(zp, np.uint8)


def _qlinear_conv(
    ctx: KernelContext, x: Array, x_scale: Array, x_zp: Array, w: Array, w_scale: Array,
    w_zp: Array, y_scale: Array, y_zp: Array, b: Array | None = None,
) -> Array:
    acc = int_conv(ctx, x, w, x_zp, w_zp)
    caxis = -1 if ctx.attr("format") == "NHWC" else 1
    shape = [1] * acc.ndim
    shape[caxis] = -1
    if b is not None:
        acc = acc + b.astype(np.int64).reshape(shape)
    mult = (x_scale.reshape(()).astype(np.float32) * w_scale.astype(np.float32)
            / y_scale.reshape(()).astype(np.float32))
    mult = mult.reshape(()) if mult.size == 1 else mult.reshape(shape)
    return requantize(acc, mult, _scalar(y_zp, "y_zero_point", "QLinearConv"), y_zp.dtype)


def _conv_integer(
    ctx: KernelContext, x: Array, w: Array, x_zp: Array | None = None, w_zp: Array | None = None
) -> Array:
    return int_conv(ctx, x, w, x_zp, w_zp).astype(np.int32)


def _qlinear_matmul(
    ctx: KernelContext, a: Array, a_scale: Array, a_zp: Array, b: Array, b_scale: Array,
    b_zp: Array, y_scale: Array, y_zp: Array,
) -> Array:
    if a.dtype in _F8 or b.dtype in _F8 or y_zp.dtype in _F8:
        fa = dequantize(a, _matmul_zp(a_scale, True), _matmul_zp(a_zp, True), np.float32)  # type: ignore[arg-type]
        fb = dequantize(b, _matmul_zp(b_scale, False), _matmul_zp(b_zp, False), np.float32)  # type: ignore[arg-type]
        y = np.matmul(fa, fb) / y_scale.astype(np.float32)
        return quantize(y, y_zp, y_zp.dtype)
    acc = int_matmul(a, b, a_zp, b_zp)
    a_s = _matmul_zp(a_scale, True).astype(np.float32)  # type: ignore[union-attr]
    b_s = _matmul_zp(b_scale, False).astype(np.float32)  # type: ignore[union-attr]
    mult = a_s * b_s / _matmul_zp(y_scale, True).astype(np.float32)  # type: ignore[union-attr]
    return requantize(acc, mult, _matmul_zp(y_zp, True), y_zp.dtype)


def _matmul_integer(
    ctx: KernelContext, a: Array, b: Array, a_zp: Array | None = None, b_zp: Array | None = None
) -> Array:
    return int_matmul(a, b, a_zp, b_zp).astype(np.int32)


KERNELS: dict[str, Any] = {
    "QuantizeLinear": _quantize_linear,
    "DequantizeLinear": _dequantize_linear,
    "DynamicQuantizeLinear": _dynamic_quantize_linear,
    "QLinearConv": _qlinear_conv,
    "ConvInteger": _conv_integer,
    "QLinearMatMul": _qlinear_matmul,
    "MatMulInteger": _matmul_integer,
}
