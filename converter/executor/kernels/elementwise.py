"""Elementwise kernels: unary math, activations, binary/variadic arithmetic, logic, comparisons.

Semantics are those of the ONNX operators of the same name (see
``ir/ops/elementwise.py``). Every kernel returns the ONNX output dtype:

- float16, bfloat16 and the float8 types are computed in float32 and rounded
  back once (NumPy has no, or only float32-backed, loops for them); float32
  and float64 are computed natively. Python scalars from attributes are weak
  under NumPy 2 promotion, so they never widen a float32 computation.
- integer inputs are computed in their own dtype (wrapping like C), except
  where ONNX mixes in float attributes (Shrink), which go through float64.
- a dtype ONNX does not allow for the op raises ``UnsupportedKernel``.

Floating-point warnings (overflow, division by zero, invalid) are silenced:
IEEE results (inf, nan) are the ONNX results.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable

import ml_dtypes
import numpy as np

from converter.executor.kernels import vector
from converter.executor.registry import Kernel, KernelContext, UnsupportedKernel

__all__ = [
    "KERNELS",
    "erf",
    "is_bool",
    "is_float",
    "is_int",
    "is_str",
    "require",
    "working",
]

Array = np.ndarray
_F32 = np.dtype(np.float32)
_LOW_FLOATS = frozenset(
    np.dtype(t)
    for t in (
        np.float16,
        ml_dtypes.bfloat16,
        ml_dtypes.float8_e4m3fn,
        ml_dtypes.float8_e4m3fnuz,
        ml_dtypes.float8_e5m2,
        ml_dtypes.float8_e5m2fnuz,
    )
)
_FLOATS = _LOW_FLOATS | {np.dtype(np.float32), np.dtype(np.float64)}


# -- dtype helpers --------------------------------------------------------------------------
def is_float(dtype: np.dtype) -> bool:
    return dtype in _FLOATS


def is_int(dtype: np.dtype) -> bool:
    return np.issubdtype(dtype, np.integer)


def is_bool(dtype: np.dtype) -> bool:
    return dtype == np.bool_


def working(x: Array) -> Array:
    """``x`` in the dtype arithmetic is done in: float32 for the low-precision floats."""
    return x.astype(_F32) if x.dtype in _LOW_FLOATS else x


def require(op: str, x: Array, *checks: Callable[[np.dtype], bool]) -> None:
    """Raise UnsupportedKernel unless ``x``'s dtype passes one of ``checks``."""
    if not any(check(x.dtype) for check in checks):
        raise UnsupportedKernel(f"{op}: dtype {x.dtype} not supported")


def _numeric(dtype: np.dtype) -> bool:
    return is_float(dtype) or is_int(dtype)


# -- erf (NumPy has none) -------------------------------------------------------------------
# Odd rational fit of erf on [-4, 4] in float32 (the coefficients of Eigen's
# generic_fast_erf_float): within 7 ulp of math.erf, 13x faster than the series.
_ERF_P = tuple(
    np.float32(v)
    for v in (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
              -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
              -1.60960333262415e-02)
)  # fmt: skip
_ERF_Q = tuple(
    np.float32(v)
    for v in (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
              -7.37332916720468e-03, -1.42647390514189e-02)
)  # fmt: skip


def _erf_float32_into(x: Array, p: Array, z: Array, z2: Array, q: Array) -> Array:
    """erf of float32 ``x`` into ``p``, with scratch ``z`` (may be ``x``), ``z2``, ``q``."""
    np.clip(x, np.float32(-4), np.float32(4), out=z)
    np.multiply(z, z, out=z2)
    np.multiply(z2, _ERF_P[0], out=p)
    p += _ERF_P[1]
    for a in _ERF_P[2:]:
        p *= z2
        p += a
    p *= z
    np.multiply(z2, _ERF_Q[0], out=q)
    q += _ERF_Q[1]
    for b in _ERF_Q[2:]:
        q *= z2
        q += b
    p /= q
    return p


def _erf_float32(x: Array) -> Array:
    """erf over cache-sized chunks (see ``vector``): the same ops per element."""
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(flat)
    z, z2, q = vector.chunk_scratch(_F32, 3)
    for sl in vector.chunks(flat.size):
        m = sl.stop - sl.start
        _erf_float32_into(flat[sl], out[sl], z[:m], z2[:m], q[:m])
    return out.reshape(x.shape)


def _gelu_float32(x: Array, in_place: bool = False) -> Array:
    """Exact float32 Gelu, 0.5 * x * (1 + erf(x / sqrt(2))), chunk by chunk.

    With ``in_place`` (a donated, contiguous ``x``) the result overwrites ``x``.
    """
    flat = np.ascontiguousarray(x).reshape(-1)
    out = flat if in_place else np.empty_like(flat)
    z, z2, q, half = vector.chunk_scratch(_F32, 4)
    for sl in vector.chunks(flat.size):
        m = sl.stop - sl.start
        xc, o, zc, hc = flat[sl], out[sl], z[:m], half[:m]
        np.multiply(xc, 0.5, out=hc)
        np.multiply(xc, 1 / math.sqrt(2), out=zc)  # the last read of xc: o may be xc
        _erf_float32_into(zc, o, zc, z2[:m], q[:m])
        o += 1
        o *= hc
    return out.reshape(x.shape)


def erf(x: Array) -> Array:
    """Vectorized error function: float32 by a rational fit (<= 7 ulp), others exactly.

    float64 is accurate to its last bit: it sums
    erf(z) = 2/sqrt(pi) * exp(-z^2) * sum_n 2^n z^(2n+1) / (2n+1)!!, whose terms are
    all positive (no cancellation), in float64 until they no longer matter; |z| is
    clipped where erf already rounds to 1.
    """
    if x.dtype == np.float32:
        return _erf_float32(x)
    limit = 6.0 if x.dtype == np.float64 else 4.0
    z = np.clip(np.abs(x.astype(np.float64)), 0.0, limit)
    z2 = z * z
    term = z.copy()
    total = z.copy()
    tol = np.finfo(x.dtype if x.dtype == np.float64 else np.float32).eps * 1e-2
    for n in range(1, 500):
        term *= (2.0 / (2 * n + 1)) * z2
        total += term
        if not np.any(term > tol * total):
            break
    y = (2.0 / math.sqrt(math.pi)) * np.exp(-z2) * total
    return np.copysign(y, x).astype(x.dtype)


# -- wrappers -------------------------------------------------------------------------------
FloatFn = Callable[[KernelContext, Array], Array]


def _float_unary(op: str, fn: FloatFn) -> Kernel:
    """A float-only unary kernel computing ``fn`` in the working dtype."""

    def kernel(ctx: KernelContext, x: Array) -> Array:
        require(op, x, is_float)
        with np.errstate(all="ignore"):
            return np.asarray(fn(ctx, working(x))).astype(x.dtype, copy=False)

    return kernel


def _numeric_unary(op: str, fn: Callable[[Array], Array], ints: bool = True) -> Kernel:
    """A unary kernel for floats (working dtype) and, with ``ints``, integers."""

    def kernel(ctx: KernelContext, x: Array) -> Array:
        require(op, x, is_float, *((is_int,) if ints else ()))
        with np.errstate(all="ignore"):
            return np.asarray(fn(working(x))).astype(x.dtype, copy=False)

    return kernel


def _binary(op: str, fn: Callable[[Array, Array], Array], *checks) -> Kernel:
    """A binary kernel; result in A's dtype (low-precision floats via float32)."""

    def kernel(ctx: KernelContext, a: Array, b: Array) -> Array:
        require(op, a, *checks)
        with np.errstate(all="ignore"):
            return np.asarray(fn(working(a), working(b))).astype(a.dtype, copy=False)

    return kernel


def _compare(op: str, fn: Callable[[Array, Array], Array], *checks) -> Kernel:
    def kernel(ctx: KernelContext, a: Array, b: Array) -> Array:
        require(op, a, *checks)
        with np.errstate(all="ignore"):
            return np.asarray(fn(working(a), working(b))).astype(np.bool_, copy=False)

    return kernel


def _variadic(op: str, fn: Callable[[Array, Array], Array], *checks, mean: bool = False):
    def kernel(ctx: KernelContext, *xs: Array) -> Array:
        if not xs:
            raise ValueError(f"{op} needs at least one input")
        require(op, xs[0], *checks)
        with np.errstate(all="ignore"):
            out = functools.reduce(fn, (working(x) for x in xs))
            if mean:
                out = out / len(xs)
        return np.asarray(out).astype(xs[0].dtype, copy=False)

    return kernel


# -- unary math -----------------------------------------------------------------------------
_FLOAT_MATH: dict[str, Callable[[Array], Array]] = {
    "Floor": np.floor,
    "Ceil": np.ceil,
    "Round": np.rint,  # halves to even
    "Sqrt": np.sqrt,
    "Reciprocal": np.reciprocal,
    "Exp": np.exp,
    "Log": np.log,
    "Sin": np.sin,
    "Cos": np.cos,
    "Tan": np.tan,
    "Asin": np.arcsin,
    "Acos": np.arccos,
    "Atan": np.arctan,
    "Sinh": np.sinh,
    "Cosh": np.cosh,
    "Asinh": np.arcsinh,
    "Acosh": np.arccosh,
    "Atanh": np.arctanh,
    "Erf": erf,
    "Tanh": np.tanh,
}


def _is_nan(ctx: KernelContext, x: Array) -> Array:
    require("IsNaN", x, is_float)
    return np.isnan(working(x))


def _is_inf(ctx: KernelContext, x: Array) -> Array:
    require("IsInf", x, is_float)
    w = working(x)
    out = np.isinf(w)
    if not ctx.attr("detect_negative"):
        out &= w > 0
    if not ctx.attr("detect_positive"):
        out &= w < 0
    return out


def _not(ctx: KernelContext, x: Array) -> Array:
    require("Not", x, is_bool)
    return np.logical_not(x)


def _bitwise_not(ctx: KernelContext, x: Array) -> Array:
    require("BitwiseNot", x, is_int)
    return np.invert(x)


def _identity(ctx: KernelContext, x: Array) -> Array:
    return x


# -- activations (x is already in the working float dtype) ---------------------------------
def _sigmoid(x: Array) -> Array:
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _softplus(x: Array) -> Array:
    return np.logaddexp(x, 0)


def _gelu(ctx: KernelContext, x: Array) -> Array:
    mode = ctx.attr("approximate")
    if mode == "tanh":
        inner = math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x)
        return 0.5 * x * (1 + np.tanh(inner))
    if mode != "none":
        raise UnsupportedKernel(f"Gelu: approximate={mode!r} not supported")
    if x.dtype == _F32:
        donated = getattr(ctx, "donated", ())  # elementwise contexts of fused ops have none
        return _gelu_float32(x, 0 in donated and x.flags.c_contiguous and x.flags.writeable)
    return 0.5 * x * (1 + erf(x * (1 / math.sqrt(2))))


def _elu(ctx: KernelContext, x: Array) -> Array:
    return np.where(x < 0, ctx.attr("alpha") * np.expm1(x), x)


def _selu(ctx: KernelContext, x: Array) -> Array:
    alpha, gamma = ctx.attr("alpha"), ctx.attr("gamma")
    return np.where(x > 0, gamma * x, (gamma * alpha) * np.expm1(x))


def _celu(ctx: KernelContext, x: Array) -> Array:
    alpha = ctx.attr("alpha")
    return np.maximum(x, 0) + np.minimum(0, alpha * np.expm1(x / alpha))


def _hard_sigmoid(ctx: KernelContext, x: Array) -> Array:
    return np.clip(ctx.attr("alpha") * x + ctx.attr("beta"), 0, 1)


def _leaky_relu(ctx: KernelContext, x: Array) -> Array:
    return np.where(x < 0, x * ctx.attr("alpha"), x)


def _thresholded_relu(ctx: KernelContext, x: Array) -> Array:
    return np.where(x > ctx.attr("alpha"), x, np.zeros_like(x))


_ACTIVATIONS: dict[str, FloatFn] = {
    "Sigmoid": lambda ctx, x: _sigmoid(x),
    "HardSigmoid": _hard_sigmoid,
    "HardSwish": lambda ctx, x: x * np.clip(x * (1 / 6) + 0.5, 0, 1),
    "LeakyRelu": _leaky_relu,
    "Elu": _elu,
    "Selu": _selu,
    "Celu": _celu,
    "Softplus": lambda ctx, x: _softplus(x),
    "Softsign": lambda ctx, x: x / (1 + np.abs(x)),
    "ThresholdedRelu": _thresholded_relu,
    "Gelu": _gelu,
    "Mish": lambda ctx, x: x * np.tanh(_softplus(x)),
}


def _swiglu(ctx: KernelContext, a: Array, b: Array) -> Array:
    require("SwiGLU", a, is_float)
    if a.shape != b.shape:
        raise ValueError(f"SwiGLU: A {list(a.shape)} and B {list(b.shape)} differ in shape")
    w = working(a)
    with np.errstate(all="ignore"):
        out = w * _sigmoid(w * ctx.attr("alpha")) * working(b)
    return out.astype(a.dtype)


# -- strings (object arrays of str) ---------------------------------------------------------
def is_str(dtype: np.dtype) -> bool:
    return dtype.kind in "OUS"


def _text(v: object) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def _string_concat(ctx: KernelContext, x: Array, y: Array) -> Array:
    require("StringConcat", x, is_str)
    require("StringConcat", y, is_str)
    join = np.frompyfunc(lambda a, b: _text(a) + _text(b), 2, 1)
    return np.asarray(join(x, y), dtype=object)


def _regex_full_match(ctx: KernelContext, x: Array) -> Array:
    require("RegexFullMatch", x, is_str)
    pattern = ctx.cache.get("pattern")
    if pattern is None:
        try:
            pattern = ctx.cache["pattern"] = re.compile(ctx.attr("pattern") or "")
        except re.error as exc:
            raise UnsupportedKernel(f"RegexFullMatch: pattern not supported ({exc})") from None
    match = np.frompyfunc(lambda v: pattern.fullmatch(_text(v)) is not None, 1, 1)
    return np.asarray(match(x), dtype=np.bool_).reshape(x.shape)


def _relu(ctx: KernelContext, x: Array) -> Array:
    require("Relu", x, is_float, is_int)
    return np.maximum(working(x), 0).astype(x.dtype, copy=False)


def _prelu(ctx: KernelContext, x: Array, slope: Array) -> Array:
    require("PRelu", x, is_float, is_int)
    w = working(x)
    with np.errstate(all="ignore"):
        out = np.where(w < 0, w * working(slope), w)
    return out.astype(x.dtype, copy=False)


def _shrink(ctx: KernelContext, x: Array) -> Array:
    require("Shrink", x, is_float, is_int)
    w = working(x) if is_float(x.dtype) else x.astype(np.float64)
    lambd, bias = ctx.attr("lambd"), ctx.attr("bias")
    out = np.where(w < -lambd, w + bias, np.where(w > lambd, w - bias, 0))
    return out.astype(x.dtype)


# -- binary arithmetic ----------------------------------------------------------------------
def _div(a: Array, b: Array) -> Array:
    if not is_int(a.dtype):
        return np.divide(a, b)
    q = np.floor_divide(a, b)
    if np.issubdtype(a.dtype, np.signedinteger):  # floor -> truncation toward zero
        q = q + ((np.mod(a, b) != 0) & ((a < 0) != (b < 0))).astype(a.dtype)
    return q


def _pow(ctx: KernelContext, x: Array, y: Array) -> Array:
    require("Pow", x, is_float, is_int)
    with np.errstate(all="ignore"):
        if is_float(x.dtype):
            w = working(x)
            out = np.power(w, working(y).astype(w.dtype))
        elif is_float(y.dtype):
            out = np.power(x.astype(np.float64), working(y).astype(np.float64))
        else:
            out = _int_pow(x.astype(np.int64), y.astype(np.int64))
        return out.astype(x.dtype)


def _int_pow(x: Array, y: Array) -> Array:
    """Integer power; a negative exponent gives trunc(1 / x**|y|) (0 unless |x| == 1)."""
    neg = y < 0
    out = np.power(x, np.where(neg, -y, y))
    return np.where(neg & (np.abs(x) != 1), 0, out)


def _mod(ctx: KernelContext, a: Array, b: Array) -> Array:
    require("Mod", a, is_float, is_int)
    fn = np.fmod if ctx.attr("fmod") else np.mod
    with np.errstate(all="ignore"):
        return fn(working(a), working(b)).astype(a.dtype, copy=False)


def _bit_shift(ctx: KernelContext, x: Array, y: Array) -> Array:
    require("BitShift", x, is_int)
    direction = ctx.attr("direction")
    if direction not in ("LEFT", "RIGHT"):
        raise ValueError(f"BitShift: direction must be LEFT or RIGHT, got {direction!r}")
    bits = x.dtype.itemsize * 8
    y = y.astype(x.dtype, copy=False)
    valid = (y >= 0) & (y < bits)
    amount = np.where(valid, y, 0).astype(x.dtype)
    if direction == "LEFT":  # on the unsigned view: bits past the sign bit are dropped
        unsigned = np.dtype(f"u{x.dtype.itemsize}")
        out = np.left_shift(x.view(unsigned), amount.view(unsigned)).view(x.dtype)
        fill = np.zeros((), x.dtype)
    else:
        out = np.right_shift(x, amount)
        fill = np.where(x < 0, -1, 0).astype(x.dtype) if x.dtype.kind == "i" else x.dtype.type(0)
    return np.where(valid, out, fill).astype(x.dtype, copy=False)


# -- ternary --------------------------------------------------------------------------------
def _where(ctx: KernelContext, cond: Array, x: Array, y: Array) -> Array:
    require("Where", cond, is_bool)
    return np.where(cond, x, y).astype(x.dtype, copy=False)


def _clip(ctx: KernelContext, x: Array, lo: Array | None = None, hi: Array | None = None):
    require("Clip", x, is_float, is_int)
    out = working(x)
    if lo is not None:
        out = np.maximum(out, working(lo).astype(out.dtype))
    if hi is not None:
        out = np.minimum(out, working(hi).astype(out.dtype))
    return out.astype(x.dtype, copy=False)


# -- table ----------------------------------------------------------------------------------
_BOOL = (is_bool,)
_INT = (is_int,)
_NUM = (is_float, is_int)
_ANY = (lambda dt: True,)

KERNELS: dict[str, Kernel] = {
    "Identity": _identity,
    **{name: _float_unary(name, lambda ctx, x, f=fn: f(x)) for name, fn in _FLOAT_MATH.items()},
    "Abs": _numeric_unary("Abs", np.abs),
    "Neg": _numeric_unary("Neg", np.negative),
    "Sign": _numeric_unary("Sign", np.sign),
    "IsNaN": _is_nan,
    "IsInf": _is_inf,
    "Not": _not,
    "BitwiseNot": _bitwise_not,
    "Relu": _relu,
    "PRelu": _prelu,
    "Shrink": _shrink,
    **{name: _float_unary(name, fn) for name, fn in _ACTIVATIONS.items()},
    "Add": _binary("Add", np.add, *_NUM),
    "Sub": _binary("Sub", np.subtract, *_NUM),
    "Mul": _binary("Mul", np.multiply, *_NUM),
    "Div": _binary("Div", _div, *_NUM),
    "Pow": _pow,
    "Mod": _mod,
    "Max": _variadic("Max", np.maximum, *_NUM),
    "Min": _variadic("Min", np.minimum, *_NUM),
    "Sum": _variadic("Sum", np.add, is_float),
    "Mean": _variadic("Mean", np.add, is_float, mean=True),
    "And": _compare("And", np.logical_and, *_BOOL),
    "Or": _compare("Or", np.logical_or, *_BOOL),
    "Xor": _compare("Xor", np.logical_xor, *_BOOL),
    "BitShift": _bit_shift,
    "BitwiseAnd": _binary("BitwiseAnd", np.bitwise_and, *_INT),
    "BitwiseOr": _binary("BitwiseOr", np.bitwise_or, *_INT),
    "BitwiseXor": _binary("BitwiseXor", np.bitwise_xor, *_INT),
    "Equal": _compare("Equal", np.equal, *_ANY),
    "Greater": _compare("Greater", np.greater, *_NUM),
    "GreaterOrEqual": _compare("GreaterOrEqual", np.greater_equal, *_NUM),
    "Less": _compare("Less", np.less, *_NUM),
    "LessOrEqual": _compare("LessOrEqual", np.less_equal, *_NUM),
    "SwiGLU": _swiglu,
    "StringConcat": _string_concat,
    "RegexFullMatch": _regex_full_match,
    "Where": _where,
    "Clip": _clip,
}
