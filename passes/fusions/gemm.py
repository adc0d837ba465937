"""Gemm canonicalized to MatMul / MatMulAct.

``Gemm(A, B, C)`` with ``alpha = beta = 1`` and ``transA = 0`` is
``A @ B' + C`` (``B' = B`` or, with ``transB = 1``, ``B^T``):

- with ``C`` over the last axis of the product (shape ``[N]``, ``[1, N]`` or
  one element) -> ``MatMulAct(A, B', bias)`` (``bias`` the 1-D ``[N]``
  vector), so the matmul fusions absorb a following activation and the node
  is written as MindSpore Lite ``MatMulFusion``;
- without ``C`` -> ``MatMul(A, B')``.

With ``transB = 1``, ``B`` must be a constant: it is transposed once, into a
new constant (refused by the engine for a trainable weight, see
:mod:`passes.freeze`). A and B must be float; ``C`` of shape ``[M, N]`` is
refused (MatMulAct's bias is per column).
"""

from __future__ import annotations

import numpy as np

from ir import Value
from passes.fusions.engine import Builder, Match, MatchResult, Op, Rule, RuleSet, Var

__all__ = ["rules"]


def _pattern() -> Op:
    return Op("Gemm", Var("a"), Var("b"), Var("c", optional=True), name="gemm")


def _n(m: Match) -> int | None:
    """N, the product's last dimension, when known."""
    b, trans = m["b"], int(m.node("gemm").attr("transB"))
    if b.rank != 2:
        return None
    n = b.shape[0 if trans else 1]  # type: ignore[index]
    return n if isinstance(n, int) else None


def _bias(m: Match) -> np.ndarray | None:
    c, n = m.get("c"), _n(m)
    if c is None or c.const is None or n is None or c.const.ndim > 2:
        return None
    if c.dtype != m["a"].dtype or any(d != 1 for d in c.const.shape[:-1]):
        return None
    if c.const.size not in (1, n):
        return None
    return np.broadcast_to(c.const.reshape(-1), (n,)).copy()


def _check(m: Match) -> MatchResult:
    gemm, a, b = m.node("gemm"), m["a"], m["b"]
    if np.float32(gemm.attr("alpha")) != 1 or np.float32(gemm.attr("beta")) != 1:
        return MatchResult.fail("alpha or beta is not 1")
    if gemm.attr("transA"):
        return MatchResult.fail("transA is set")
    if not (a.dtype.is_float and b.dtype == a.dtype):
        return MatchResult.fail("Gemm is not on one float dtype")
    if a.rank != 2 or b.rank != 2:
        return MatchResult.fail("A or B is not 2-D")
    if gemm.attr("transB") and b.const is None:
        return MatchResult.fail(f"transB with a non-constant weight {b.name!r}")
    if m.get("c") is not None and _bias(m) is None:
        return MatchResult.fail(f"C {m['c'].name!r} is not a constant bias over the last axis")
    return MatchResult.success()


def _rewrite(bld: Builder, m: Match) -> Value:
    b = m["b"]
    if m.node("gemm").attr("transB"):
        b = bld.const(np.ascontiguousarray(b.const.T), f"{b.name}_t")
    c = m.get("c")
    if c is None:
        return bld.op("MatMul", m["a"], b)
    bias = _bias(m)
    assert bias is not None
    bias_v = c if c.const.shape == bias.shape else bld.const(bias, f"{c.name}_bias")
    return bld.op("MatMulAct", m["a"], b, bias_v)


rules = RuleSet([Rule("Gemm->MatMul", _pattern(), _rewrite, _check)])
"""Gemm canonicalization."""
