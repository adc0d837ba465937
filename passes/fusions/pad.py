"""Zero Pad + convolution -> the convolution's own pads.

``Conv(Pad(x, pads, 0), W, B)`` (or ``ConvAct``), the Pad in ``constant`` mode
with value 0 (or omitted), non-negative constant pads on the spatial axes only
(axes 2.. of an NCHW conv, 1..rank-2 of an NHWC one; batch and channel pads
0) and the conv with ``auto_pad`` NOTSET, becomes the conv with those pads
added to its ``pads`` (``[x1_begin, x2_begin, ..., x1_end, x2_end, ...]``
over the spatial axes for both ops). A convolution reads zeros outside its
input exactly where the Pad wrote them, so the result is bit for bit the same.

Exporters write such a Pad for asymmetric "same" padding (TF/Keras
``ZeroPadding2D``, PyTorch ``F.pad`` before a strided conv). ``axes`` may be
given (a constant). Reflect/edge padding or a non-zero value are refused,
as are negative pads (crops).
"""

from __future__ import annotations

import numpy as np

from ir import Value
from passes.fusions.engine import Builder, Match, MatchResult, Op, Rule, RuleSet, Var, scalar_value

__all__ = ["rules"]

CONVS = ("Conv", "ConvAct")


def _pattern(op: str) -> Op:
    pad = Op("Pad", Var("x"), Var("pads"), Var("value", optional=True),
             Var("axes", optional=True), name="pad")  # fmt: skip
    return Op(op, pad, Var("w"), Var("b", optional=True), name="conv")


def _spatial_axes(m: Match) -> list[int] | None:
    rank = m["x"].rank
    if rank is None or rank < 3:
        return None
    nhwc = m.node("conv").attr("format") == "NHWC"
    return list(range(1, rank - 1)) if nhwc else list(range(2, rank))


def _full_pads(m: Match) -> np.ndarray | None:
    """The Pad's pads as ``[rank, 2]`` (begin, end) per axis, None when not static."""
    rank, pads, axes_v = m["x"].rank, m["pads"].const, m.get("axes")
    if rank is None or pads is None or not np.issubdtype(pads.dtype, np.integer):
        return None
    if axes_v is None:
        axes = list(range(rank))
    elif axes_v.const is None or not np.issubdtype(axes_v.const.dtype, np.integer):
        return None
    else:
        axes = [int(a) % rank if -rank <= int(a) < rank else -1 for a in axes_v.const.reshape(-1)]
        if -1 in axes or len(set(axes)) != len(axes):
            return None
    flat = pads.reshape(-1).astype(np.int64)
    if flat.size != 2 * len(axes):
        return None
    out = np.zeros((rank, 2), np.int64)
    out[axes, 0], out[axes, 1] = flat[: len(axes)], flat[len(axes) :]
    return out


def _check(m: Match) -> MatchResult:
    pad, conv = m.node("pad"), m.node("conv")
    if pad.attr("mode") != "constant":
        return MatchResult.fail(f"Pad mode {pad.attr('mode')!r} is not constant")
    value = m.get("value")
    if value is not None and scalar_value(value) != 0.0:
        return MatchResult.fail("the pad value is not a constant 0")
    if conv.attr("auto_pad") != "NOTSET":
        return MatchResult.fail(f"the conv has auto_pad {conv.attr('auto_pad')}")
    spatial, full = _spatial_axes(m), _full_pads(m)
    if spatial is None or full is None:
        return MatchResult.fail("the pads or the input rank are not static")
    if np.any(full < 0):
        return MatchResult.fail("the Pad crops (negative pads)")
    others = [a for a in range(full.shape[0]) if a not in spatial]
    if np.any(full[others] != 0):
        return MatchResult.fail("the Pad pads the batch or channel axis")
    pads = conv.attr("pads")
    if pads is not None and len(pads) != 2 * len(spatial):
        return MatchResult.fail("the conv pads do not match its spatial rank")
    return MatchResult.success()


def _merge(b: Builder, m: Match) -> Value:
    conv, spatial, full = m.node("conv"), _spatial_axes(m), _full_pads(m)
    assert spatial is not None and full is not None
    n = len(spatial)
    old = conv.attr("pads") or [0] * (2 * n)
    added = [*full[spatial, 0].tolist(), *full[spatial, 1].tolist()]
    pads = [int(p) + int(q) for p, q in zip(old, added, strict=True)]
    return b.op(conv.op, m["x"], m["w"], m.get("b"), **dict(conv.attrs, pads=pads))


rules = RuleSet([Rule(f"Pad+{op}", _pattern(op), _merge, _check) for op in CONVS])
"""Pad + Conv / ConvAct rules."""
