"""Shape-only chains and Slice/Concat round trips.

- A chain of two shape-only ops (Reshape, Flatten, Squeeze, Unsqueeze, in any
  combination; longer chains collapse pairwise) -> one ``Reshape(x, target)``
  with a constant target computed from the inferred output shape: static dims
  as they are, a symbolic dim equal to ``x``'s dim at the same index as 0
  (copy; ``allowzero`` 0), at most one other dim as -1. Refused when that is
  not enough to pin the shape, or when a static dim is 0 (0 means "copy").
  A chain that ends with ``x``'s own shape is then removed by
  :class:`passes.noop.RemoveNoOps` (which also removes a lone Reshape to the
  same shape, full Slices and one-input Concats).
- ``Slice(Concat(x_1..x_n, axis))`` selecting exactly one ``x_i`` (constant
  starts/ends on the concat axis only, step 1, static sizes on that axis)
  -> ``x_i``.
- ``Concat(s_1..s_n, axis)`` where the ``s_i`` are Slices of one ``x`` (or the
  outputs of one Split of ``x``), along ``axis``, contiguous, in order, from 0
  to the end of ``x`` -> ``x``.

The last two leave an Identity that the no-op pass removes (it keeps
graph-output names); the bypassed Slices/Concat/Split are removed as dead.
"""

from __future__ import annotations

import numpy as np

from ir import Node, Value
from passes.fusions.engine import Builder, Match, MatchResult, Op, Rule, RuleSet, Var

__all__ = ["SHAPE_OPS", "rules"]

SHAPE_OPS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")
_MAX_CONCAT = 8
_BIG = 2**31 - 1


# -- chains ---------------------------------------------------------------------------------
def _chain(outer: str, inner: str) -> Op:
    first = Op(inner, Var("x"), Var("inner_arg", optional=True), name="inner")
    return Op(outer, first, Var("outer_arg", optional=True), name="outer")


def _target(x: Value, out: Value) -> list[int] | None:
    """A Reshape target taking ``x`` to ``out``'s shape, or None."""
    if x.shape is None or out.shape is None:
        return None
    target: list[int] = []
    free = 0
    for i, d in enumerate(out.shape):
        if isinstance(d, int):
            if d == 0:
                return None
            target.append(d)
        elif d is not None and i < len(x.shape) and x.shape[i] == d:
            target.append(0)
        else:
            free += 1
            target.append(-1)
    return target if free <= 1 else None


def _check_chain(m: Match) -> MatchResult:
    if _target(m["x"], m.root.outputs[0]) is None:
        return MatchResult.fail("the chain's output shape is not pinned by its input's")
    return MatchResult.success()


def _collapse(b: Builder, m: Match) -> Value:
    target = _target(m["x"], m.root.outputs[0])
    assert target is not None
    shape = b.const(np.asarray(target, np.int64), f"{m.root.name}_shape")
    return b.op("Reshape", m["x"], shape)


# -- Slice of Concat ------------------------------------------------------------------------
def _ints(v: Value | None) -> list[int] | None:
    if v is None or v.const is None or not np.issubdtype(v.const.dtype, np.integer):
        return None
    return [int(a) for a in v.const.reshape(-1)]


def _slice_range(node: Node, axis: int, rank: int) -> tuple[int, int] | None:
    """(start, end) on ``axis`` of a step-1 Slice touching only that axis, raw values."""
    starts, ends = _ints(node.input(1)), _ints(node.input(2))
    axes = _ints(node.input(3)) if node.input(3) is not None else list(range(len(starts or [])))
    steps = _ints(node.input(4)) if node.input(4) is not None else [1] * len(axes or [])
    if starts is None or ends is None or axes is None or steps is None:
        return None
    if not (len(starts) == len(ends) == len(axes) == len(steps) == 1):
        return None
    if steps[0] != 1 or axes[0] % rank != axis:
        return None
    return starts[0], ends[0]


def _normalize(start: int, end: int, size: int) -> tuple[int, int]:
    s = start + size if start < 0 else start
    e = size if end >= _BIG else (end + size if end < 0 else end)
    return min(max(s, 0), size), min(max(e, 0), size)


def _slice_pattern() -> Op:
    ins = (Var("starts"), Var("ends"), Var("axes", optional=True), Var("steps", optional=True))
    return Op("Slice", Var("cat"), *ins, name="slice")


def _picked(m: Match) -> Value | None:
    cat = m["cat"].producer
    if cat is None or cat.op != "Concat" or cat.graph is not m.graph:
        return None
    rank = m["cat"].rank
    if rank is None:
        return None
    axis = int(cat.attr("axis")) % rank
    rng = _slice_range(m.node("slice"), axis, rank)
    sizes = [None if v is None or v.rank != rank else v.shape[axis] for v in cat.inputs]
    if rng is None or not all(isinstance(s, int) for s in sizes):
        return None
    start, end = _normalize(*rng, sum(sizes))  # type: ignore[arg-type]
    offset = 0
    for v, size in zip(cat.inputs, sizes, strict=True):
        if (offset, offset + size) == (start, end) and size > 0:  # type: ignore[operator]
            return v
        offset += size  # type: ignore[operator]
    return None


def _check_slice(m: Match) -> MatchResult:
    if _picked(m) is None:
        return MatchResult.fail("the Slice does not pick one whole Concat input")
    return MatchResult.success()


def _slice_of_concat(b: Builder, m: Match) -> Value:
    return b.op("Identity", _picked(m))


# -- Concat of Slices -----------------------------------------------------------------------
def _concat_pattern(n: int) -> Op:
    return Op("Concat", *(Var(f"s{i}") for i in range(n)), name="cat")


def _pieces(m: Match) -> Value | None:
    """``x`` when the Concat's inputs are its pieces along the concat axis, in order."""
    cat = m.node("cat")
    parts = [v for v in cat.inputs if v is not None]
    producers = [v.producer for v in parts]
    if any(p is None or p.graph is not m.graph for p in producers):
        return None
    x = producers[0].input(0)  # type: ignore[union-attr]
    if not x or not x.rank or any(p.input(0) is not x for p in producers):  # type: ignore[union-attr]
        return None  # unknown rank, or a scalar (Concat needs rank >= 1 anyway)
    axis = int(cat.attr("axis")) % x.rank
    if all(p.op == "Split" for p in producers):
        split = producers[0]
        if any(p is not split for p in producers) or int(split.attr("axis")) % x.rank != axis:
            return None
        return x if list(split.outputs) == parts else None
    size = x.shape[axis]
    if not isinstance(size, int) or any(p.op != "Slice" for p in producers):
        return None
    offset = 0
    for p in producers:
        rng = _slice_range(p, axis, x.rank)  # type: ignore[arg-type]
        if rng is None:
            return None
        start, end = _normalize(*rng, size)
        if start != offset or end <= start:
            return None
        offset = end
    return x if offset == size else None


def _check_concat(m: Match) -> MatchResult:
    if _pieces(m) is None:
        return MatchResult.fail("the Concat inputs are not the pieces of one tensor, in order")
    return MatchResult.success()


def _concat_of_slices(b: Builder, m: Match) -> Value:
    return b.op("Identity", _pieces(m))


rules = RuleSet(
    [
        *(Rule(f"{inner}+{outer}", _chain(outer, inner), _collapse, _check_chain)
          for outer in SHAPE_OPS for inner in SHAPE_OPS),
        Rule("Slice(Concat)", _slice_pattern(), _slice_of_concat, _check_slice),
        *(Rule("Concat(Slices)", _concat_pattern(n), _concat_of_slices, _check_concat)
          for n in range(2, _MAX_CONCAT + 1)),
    ]
)  # fmt: skip
"""Reshape-chain and Slice/Concat rules."""
