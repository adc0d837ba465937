"""Normalization recognition: RMSNorm, InstanceNorm, GroupNorm and L2Norm.

``ReduceMean``/``ReduceSum`` below have constant ``axes`` and keepdims=1;
``eps`` is a scalar constant; ``x ^ 2`` may be ``Pow(x, 2)`` or ``x * x``;
``a / s`` may be ``a * Reciprocal(s)``. Inputs are float32/16/bf16 (the
fused ops compute in float32).

- RMSNorm over trailing axes ``[k, rank)`` (static normalized dims)::

      x / Sqrt(ReduceMean(x ^ 2) + eps)        (also x * (1 / Sqrt(..)))

  -> ``RMSNormalization(x, ones, axis=k, epsilon=eps)``; refused when ``x``
  is itself ``y - ReduceMean(y)`` over the same axes (that is a LayerNorm,
  :mod:`passes.fusions.layernorm`). ``RMSNormalization(x, S) * g`` (g constant
  over the normalized dims) -> ``RMSNormalization(x, S * g)``.
- InstanceNorm: the LayerNorm core ``d / Sqrt(ReduceMean(d ^ 2) + eps)``,
  ``d = x - ReduceMean(x)``, over the spatial axes: ``[2, rank)`` with rank
  >= 4 (``format`` NCHW; rank 3 is left to LayerNorm) or ``[1, rank - 1)``
  (NHWC) -> ``InstanceNormalization(x, ones, zeros, epsilon=eps)``, C static;
  left to LayerNorm when a Mul/Add by a constant varying over the spatial
  dims follows (a LayerNorm over [H, W] with its affine part).
- GroupNorm (NCHW, the form PyTorch exports)::

      Reshape(InstanceNormalization(Reshape(x, [N, G, -1]), s, b), shape(x))
      Reshape(LayerNormalization(Reshape(x, [N, G, -1]), ones, axis=-1), shape(x))

  -> ``GroupNormalization(x, s', b', epsilon, num_groups=G)`` with the
  per-group ``s``/``b`` repeated over each group's ``C / G`` channels (the
  LayerNorm form needs ones and no or zero bias).
- Per-channel affine after InstanceNormalization / GroupNormalization:
  ``N(x, s, b) * g`` -> ``N(x, s * g, b * g)``; ``N(x, s, b) + beta`` ->
  ``N(x, s, b + beta)`` (g, beta constants over the channel axis only).
- L2Norm along one axis ``a``::

      x / n,   x / Max(n, eps),   x / Clip(n, eps),   x / Expand(Clip(n, eps), shape(x))
      x * Reciprocal(Sqrt(Max(ReduceSum(x ^ 2), eps)))          (TF l2_normalize)

  with ``n`` = ``Sqrt(ReduceSum(x ^ 2))``, ``ReduceL2(x)`` or
  ``Sqrt(ReduceSumSquare(x))`` -> ``LpNormalization(x, axis=a, p=2)``. The
  eps forms differ only where the norm is below eps (<= 1e-6 is required):
  LpNormalization divides by the norm itself (0 stays 0).
"""

from __future__ import annotations

import numpy as np

from ir import DataType, Value
from passes.fusions.engine import (
    Builder,
    Const,
    Match,
    MatchResult,
    Op,
    Or,
    Pattern,
    Rule,
    RuleSet,
    Var,
    scalar_value,
)

__all__ = ["rules"]

_DTYPES = (DataType.FLOAT, DataType.FLOAT16, DataType.BFLOAT16)
_MAX_L2_EPS = 1e-6


# -- shared helpers -------------------------------------------------------------------------
def _square(x: Pattern) -> Pattern:
    return Or(Op("Pow", x, Const("two", 2.0)), Op("Mul", x, x))


def _divided(num: Pattern, den: Pattern) -> list[Op]:
    return [
        Op("Div", num, den),
        Op("Mul", num, Op("Reciprocal", den), commute=True),
        Op("Mul", num, Op("Div", Const("one", 1.0), den), commute=True),
    ]


def _axes(m: Match, names: tuple[str, ...], rank: int) -> list[int] | None:
    """The sorted axes the reductions ``names`` share (constant, each once), else None."""
    sets = []
    for name in names:
        node = m.node(name)
        if node.attr("keepdims") != 1 or node.attr("noop_with_empty_axes") != 0:
            return None
        axes_v = node.input(1)
        if axes_v is None or axes_v.const is None:
            return None
        axes = axes_v.const.reshape(-1)
        if not np.issubdtype(axes.dtype, np.integer) or axes.size == 0:
            return None
        got = sorted({int(a) % rank for a in axes if -rank <= int(a) < rank})
        if len(got) != axes.size:
            return None
        sets.append(got)
    return sets[0] if all(s == sets[0] for s in sets) else None


def _float_ok(x: Value) -> MatchResult:
    if x.dtype not in _DTYPES:
        return MatchResult.fail(f"{x.name!r} is {x.dtype.name}, not float32/16")
    if x.rank is None:
        return MatchResult.fail(f"the rank of {x.name!r} is unknown")
    return MatchResult.success()


def _eps(m: Match) -> float | None:
    value = scalar_value(m["eps"])
    return None if value is None else float(np.float32(value))


# -- RMSNorm --------------------------------------------------------------------------------
def _rms_patterns() -> list[Op]:
    x = Var("x")
    ms = Op("ReduceMean", _square(x), Var("axes"), name="mean")
    std = Op("Sqrt", Op("Add", ms, Const("eps"), commute=True))
    return _divided(x, std)


def _mean_centered(x: Value, axes: list[int]) -> bool:
    """Whether ``x`` is ``y - ReduceMean(y)`` over ``axes`` (a LayerNorm's ``d``)."""
    sub = x.producer
    if sub is None or sub.op != "Sub" or sub.input(1) is None:
        return False
    mean = sub.input(1).producer  # type: ignore[union-attr]
    if mean is None or mean.op != "ReduceMean" or mean.input(0) is not sub.input(0):
        return False
    axes_v = mean.input(1)
    if axes_v is None or axes_v.const is None or x.rank is None:
        return False
    rank = x.rank
    return sorted({int(a) % rank for a in axes_v.const.reshape(-1)}) == axes


def _rms_axis(m: Match) -> int | None:
    rank = m["x"].rank
    axes = None if rank is None else _axes(m, ("mean",), rank)
    if axes is None or axes != list(range(rank - len(axes), rank)):  # type: ignore[operator]
        return None
    return axes[0]


def _check_rms(m: Match) -> MatchResult:
    x = m["x"]
    ok = _float_ok(x)
    if not ok:
        return ok
    axis = _rms_axis(m)
    if axis is None:
        return MatchResult.fail("the mean is not over trailing axes with keepdims")
    if _eps(m) is None:
        return MatchResult.fail("epsilon is not a scalar constant")
    if not all(isinstance(d, int) for d in x.shape[axis:]):  # type: ignore[index]
        return MatchResult.fail("the normalized dims are not static")
    if _mean_centered(x, list(range(axis, x.rank))):  # type: ignore[arg-type]
        return MatchResult.fail("x is mean-centered over the same axes: a LayerNorm")
    return MatchResult.success()


def _to_rms(b: Builder, m: Match) -> Value:
    x, axis = m["x"], _rms_axis(m)
    assert axis is not None and x.rank is not None and x.shape is not None
    scale = b.const(np.ones(x.shape[axis:], x.dtype.numpy), f"{m.root.name}_scale")
    return b.op("RMSNormalization", x, scale, axis=axis - x.rank, epsilon=_eps(m))


def _rms_scale_pattern() -> Op:
    rms = Op("RMSNormalization", Var("x"), Const("s"), name="rms")
    return Op("Mul", rms, Const("c"), commute=True)


def _over_norm_dims(m: Match) -> np.ndarray | None:
    """``c`` broadcast to the normalized shape, None when it reaches other dims."""
    x, c, s = m["x"], m["c"].const, m["s"].const
    if x.rank is None or c.dtype != s.dtype or c.ndim > x.rank:
        return None
    axis = int(m.node("rms").attr("axis")) % x.rank
    shape = x.shape[axis:]  # type: ignore[index]
    if not all(isinstance(d, int) for d in shape):
        return None
    extra = c.shape[: max(c.ndim - len(shape), 0)]
    if any(d != 1 for d in extra):
        return None
    try:
        return np.broadcast_to(c.reshape(c.shape[len(extra) :]).astype(np.float64), shape)
    except ValueError:
        return None


def _check_rms_scale(m: Match) -> MatchResult:
    if _over_norm_dims(m) is None:
        return MatchResult.fail(f"{m['c'].name!r} does not broadcast over the normalized dims")
    return MatchResult.success()


def _fold_rms_scale(b: Builder, m: Match) -> Value:
    g = _over_norm_dims(m)
    assert g is not None
    rms, s = m.node("rms"), m["s"].const
    new_s = np.broadcast_to(s.astype(np.float64), g.shape) * g
    return b.op("RMSNormalization", m["x"], b.const(new_s.astype(s.dtype), f"{rms.name}_scale"),
                **rms.attrs)  # fmt: skip


# -- InstanceNorm ---------------------------------------------------------------------------
def _centered_patterns() -> list[Op]:
    x = Var("x")
    d = Op("Sub", x, Op("ReduceMean", x, Var("axes1"), name="mean1"), name="d")
    var = Op("ReduceMean", _square(d), Var("axes2"), name="mean2")
    std = Op("Sqrt", Op("Add", var, Const("eps"), commute=True))
    return _divided(d, std)


def _instance_format(m: Match) -> str | None:
    rank = m["x"].rank
    axes = None if rank is None else _axes(m, ("mean1", "mean2"), rank)
    if axes is None or rank is None:
        return None
    if rank >= 4 and axes == list(range(2, rank)):
        return "NCHW"
    if rank >= 3 and axes == list(range(1, rank - 1)):
        return "NHWC"
    return None


def _channels(x: Value, fmt: str) -> int | None:
    c = x.shape[-1 if fmt == "NHWC" else 1]  # type: ignore[index]
    return c if isinstance(c, int) else None


def _check_instance(m: Match) -> MatchResult:
    x = m["x"]
    ok = _float_ok(x)
    if not ok:
        return ok
    fmt = _instance_format(m)
    if fmt is None:
        return MatchResult.fail("the reductions are not over the spatial axes")
    if _eps(m) is None:
        return MatchResult.fail("epsilon is not a scalar constant")
    if _channels(x, fmt) is None:
        return MatchResult.fail("the channel count is not static")
    if _spatial_affine(m, fmt):
        return MatchResult.fail("a constant over the spatial dims follows: a LayerNorm")
    return MatchResult.success()


def _spatial_affine(m: Match, fmt: str) -> bool:
    """Whether the result's only reader is a Mul/Add by a constant varying over spatial dims."""
    out, rank = m.root.outputs[0], m["x"].rank
    users = out.consumers()
    if len(users) != 1 or users[0].op not in ("Mul", "Add") or rank is None:
        return False
    other = next((v for v in users[0].inputs if v is not out), None)
    if other is None or other.const is None or other.const.ndim > rank:
        return False
    shape = (1,) * (rank - other.const.ndim) + tuple(other.const.shape)
    spatial = range(2, rank) if fmt == "NCHW" else range(1, rank - 1)
    return any(shape[i] != 1 for i in spatial)


def _to_instance(b: Builder, m: Match) -> Value:
    x, fmt = m["x"], _instance_format(m)
    assert fmt is not None
    c = _channels(x, fmt)
    assert c is not None
    scale = b.const(np.ones(c, x.dtype.numpy), f"{m.root.name}_scale")
    bias = b.const(np.zeros(c, x.dtype.numpy), f"{m.root.name}_bias")
    attrs = {"epsilon": _eps(m)} | ({"format": fmt} if fmt == "NHWC" else {})
    return b.op("InstanceNormalization", x, scale, bias, **attrs)


# -- GroupNorm ------------------------------------------------------------------------------
def _group_pattern() -> Op:
    fwd = Op("Reshape", Var("x"), Var("shape1"), name="fwd")
    norm = Or(
        Op("InstanceNormalization", fwd, Const("s"), Const("bias"), name="norm"),
        Op("LayerNormalization", fwd, Const("s"), Var("bias", optional=True), name="norm"),
    )
    return Op("Reshape", norm, Var("shape2"), name="back")


def _groups(m: Match) -> int | None:
    """G when ``fwd`` reshapes NCHW ``x`` [N, C, ...] to [N, G, C/G * ...], else None."""
    x, fwd = m["x"], m.node("fwd")
    r = fwd.outputs[0].shape
    if x.shape is None or x.rank is None or x.rank < 3 or r is None or len(r) != 3:
        return None
    c, g = x.shape[1], r[1]
    if not (isinstance(c, int) and isinstance(g, int)) or g <= 0 or c % g:
        return None
    shape1 = m["shape1"].const
    same_n = (x.shape[0] is not None and r[0] == x.shape[0]) or (
        shape1 is not None and shape1.size == 3 and int(shape1[0]) == 0
        and fwd.attr("allowzero") == 0
    )  # fmt: skip
    return g if same_n else None


def _norm_ok(m: Match, g: int) -> str | None:
    """Why the inner normalization is not a per-group one, or None."""
    norm, s, bias = m.node("norm"), m["s"].const, m.get("bias")
    if any(o.uses for o in norm.outputs[1:]):
        return "the normalization's extra outputs are used"
    if norm.op == "InstanceNormalization":
        if norm.attr("format") != "NCHW" or s.size != g or bias.const.size != g:
            return "the InstanceNormalization is not per group"
        return None
    if int(norm.attr("axis")) % 3 != 2:
        return "the LayerNormalization is not over the last axis"
    if not np.all(s == 1) or (bias is not None and (bias.const is None or np.any(bias.const))):
        return "the LayerNormalization has an affine part"
    return None


def _check_group(m: Match) -> MatchResult:
    x = m["x"]
    ok = _float_ok(x)
    if not ok:
        return ok
    g = _groups(m)
    if g is None:
        return MatchResult.fail("the first Reshape is not [N, G, -1] of an NCHW tensor")
    why = _norm_ok(m, g)
    if why is not None:
        return MatchResult.fail(why)
    if m.root.outputs[0].shape != x.shape or None in x.shape:  # type: ignore[operator]
        return MatchResult.fail("the second Reshape does not restore the input shape")
    return MatchResult.success()


def _to_group(b: Builder, m: Match) -> Value:
    x, norm, g = m["x"], m.node("norm"), _groups(m)
    assert g is not None and x.shape is not None
    c, dtype = int(x.shape[1]), x.dtype.numpy  # type: ignore[arg-type]
    if norm.op == "InstanceNormalization":
        s = np.repeat(m["s"].const.reshape(-1), c // g).astype(dtype)
        bias = np.repeat(m["bias"].const.reshape(-1), c // g).astype(dtype)
    else:
        s, bias = np.ones(c, dtype), np.zeros(c, dtype)
    return b.op("GroupNormalization", x, b.const(s, f"{m.root.name}_scale"),
                b.const(bias, f"{m.root.name}_bias"), epsilon=float(norm.attr("epsilon")),
                num_groups=g)  # fmt: skip


# -- per-channel affine after InstanceNorm / GroupNorm ---------------------------------------
_CHANNEL_NORMS = ("InstanceNormalization", "GroupNormalization")


def _affine_pattern(norm: str, op: str) -> Op:
    inner = Op(norm, Var("x"), Const("s"), Const("bias"), name="norm")
    return Op(op, inner, Const("c"), commute=True)


def _per_channel(m: Match) -> np.ndarray | None:
    x, norm, c = m["x"], m.node("norm"), m["c"].const
    rank, s = x.rank, m["s"].const
    if rank is None or c.ndim > rank or c.dtype != s.dtype:
        return None
    fmt = norm.attr("format")
    axis = rank - 1 if fmt == "NHWC" else 1
    channels = x.shape[axis]  # type: ignore[index]
    shape = (1,) * (rank - c.ndim) + tuple(c.shape)
    if not isinstance(channels, int) or s.size != channels:
        return None
    if any(d != 1 for i, d in enumerate(shape) if i != axis) or shape[axis] not in (1, channels):
        return None
    return np.broadcast_to(c.reshape(-1).astype(np.float64), (channels,))


def _check_affine(m: Match) -> MatchResult:
    if _per_channel(m) is None:
        return MatchResult.fail(f"{m['c'].name!r} is not per channel")
    return MatchResult.success()


def _fold_affine(b: Builder, m: Match) -> Value:
    c = _per_channel(m)
    assert c is not None
    norm, s0 = m.node("norm"), m["s"].const
    s, bias = s0.astype(np.float64).reshape(-1), m["bias"].const.astype(np.float64).reshape(-1)
    if m.root.op == "Mul":
        s, bias = s * c, bias * c
    else:
        bias = bias + c
    new_s = b.const(s.astype(s0.dtype), f"{norm.name}_scale")
    new_b = b.const(bias.astype(s0.dtype), f"{norm.name}_bias")
    return b.op(norm.op, m["x"], new_s, new_b, **norm.attrs)


# -- L2Norm ---------------------------------------------------------------------------------
def _l2_patterns() -> list[Op]:
    x, eps = Var("x"), Const("eps")
    norm = Or(
        Op("Sqrt", Op("ReduceSum", _square(x), Var("axes"), name="red")),
        Op("ReduceL2", x, Var("axes"), name="red"),
        Op("Sqrt", Op("ReduceSumSquare", x, Var("axes"), name="red")),
    )
    clamped = Or(Op("Max", norm, eps, commute=True), Op("Clip", norm, eps))
    den = Or(norm, clamped, Op("Expand", clamped, Var("shape"), name="expand"))
    tf_sum = Op("ReduceSum", _square(x), Var("axes"), name="red")
    tf_den = Op("Sqrt", Op("Max", tf_sum, eps, commute=True))
    return [*_divided(x, den), *_divided(x, tf_den)]


def _l2_axis(m: Match) -> int | None:
    rank = m["x"].rank
    axes = None if rank is None else _axes(m, ("red",), rank)
    return axes[0] if axes is not None and len(axes) == 1 else None


def _check_l2(m: Match) -> MatchResult:
    x = m["x"]
    ok = _float_ok(x)
    if not ok:
        return ok
    if _l2_axis(m) is None:
        return MatchResult.fail("the norm is not over one axis with keepdims")
    if m.get("eps") is not None:
        eps = scalar_value(m["eps"])
        if eps is None or not 0 <= eps <= _MAX_L2_EPS:
            return MatchResult.fail(f"eps is not a scalar constant in [0, {_MAX_L2_EPS}]")
    if m.get("expand") is not None and m.root.outputs[0].shape != x.shape:
        return MatchResult.fail("the Expand broadcasts past the input's shape")
    return MatchResult.success()


def _to_l2(b: Builder, m: Match) -> Value:
    axis = _l2_axis(m)
    assert axis is not None
    return b.op("LpNormalization", m["x"], axis=axis, p=2)


rules = RuleSet(
    [
        *(Rule("InstanceNorm", p, _to_instance, _check_instance) for p in _centered_patterns()),
        *(Rule("RMSNorm", p, _to_rms, _check_rms) for p in _rms_patterns()),
        Rule("RMSNorm*Scale", _rms_scale_pattern(), _fold_rms_scale, _check_rms_scale),
        Rule("GroupNorm", _group_pattern(), _to_group, _check_group),
        *(
            Rule(
                f"{norm}{'*Scale' if op == 'Mul' else '+Bias'}",
                _affine_pattern(norm, op),
                _fold_affine,
                _check_affine,
            )
            for norm in _CHANNEL_NORMS
            for op in ("Mul", "Add")
        ),  # fmt: skip
        *(Rule("L2Norm", p, _to_l2, _check_l2) for p in _l2_patterns()),
    ]
)
"""Normalization recognition (tried before the LayerNorm family)."""
