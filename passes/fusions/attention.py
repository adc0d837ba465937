"""Attention recognition -> ai.onnx ``Attention`` (opset 23).

Two rules that compose (like LayerNorm's core and affine rules):

1. The core, on 4-D ``[B, heads, S, D]`` tensors, anchored at the second MatMul::

       s = MatMul(Q, Kt)                 Kt = Transpose(k, perm) or any K^T value
       s = s / c  |  s * c  |  s         c a scalar constant -> scale = 1/c | c | 1
       s = s + mask  |  s                 (either operand order; additive mask)
       Y = MatMul(Softmax(s, axis=-1), V)

   becomes ``Attention(Q, K, V, mask, scale=...)``. ``K`` is ``k`` when
   ``perm`` only swaps the last two axes, else ``Transpose(k)`` with ``perm``
   composed with that swap (a new node; also when Kt is no Transpose at all).
   Q, K and V must have the same batch and head dims. The mask is passed as
   ``attn_mask``: it must have the scores' dtype, rank <= 4, must not grow the
   scores' shape, and its last dim must not be a static 1 against a longer key
   axis (Attention pads a short mask with -inf instead of broadcasting it). A
   symbolic mask dim is taken to be the score dim it lines up with, as in the
   key masks every exporter writes.

2. The head split/merge around a 4-D Attention, as exporters write them::

       q4 = Transpose(Reshape(q, [B, S, h, d]), perm=[0, 2, 1, 3])     (k4, v4 alike)
       y  = Reshape(Transpose(Attention(q4, k4, v4, mask), perm=[0, 2, 1, 3]), [B, S, h*dv])

   becomes the 3-D ``Attention(q, k, v, mask, q_num_heads=h, kv_num_heads=hkv)``.
   The Reshape targets may be computed (Shape/Gather/Concat chains: the
   inferred output shapes are checked: same B and S as the input, static
   ``h`` and ``d``). The chains computing them are then dead.

Softmax with all keys masked by -inf gives 0 instead of NaN in Attention; any
finite mask (the -10000 of BERT exporters) gives the same numbers.
"""

from __future__ import annotations

from ir import Dim, Node, Value
from passes.fusions.engine import (
    Builder,
    Const,
    Match,
    MatchResult,
    Op,
    Or,
    Rule,
    RuleSet,
    Var,
    scalar_value,
)

__all__ = ["rules"]

_HEADS_PERM = [0, 2, 1, 3]


def _same(a: Dim, b: Dim) -> bool:
    """Provably equal dims (same int or same symbol)."""
    return a is not None and a == b


# -- 1. the core ----------------------------------------------------------------------------
def _core_patterns() -> list[Op]:
    scores = Op("MatMul", Var("q"), Or(Op("Transpose", Var("k"), name="kt"), Var("kt_v")),
                name="qk")  # fmt: skip
    scaled = Or(
        Op("Div", scores, Const("c"), name="scale"),
        Op("Mul", scores, Const("c"), name="scale", commute=True),
        scores,
    )
    masked = Or(Op("Add", scaled, Var("mask"), name="mask_add", commute=True), scaled)
    return [Op("MatMul", Op("Softmax", masked, name="softmax"), Var("v"), name="pv")]


def _k_perm(m: Match) -> list[int] | None:
    """The permutation taking the key source to K [B, h, S, D], None for K^T values."""
    kt = m.get("kt")
    if kt is None:
        return None
    p = [int(a) % 4 for a in kt.attr("perm") or [3, 2, 1, 0]]
    return [p[0], p[1], p[3], p[2]]


def _k_shape(m: Match) -> tuple | None:
    kt = m["k"] if m.get("kt") is not None else m["kt_v"]
    if kt.rank != 4:
        return None
    if m.get("kt") is None:
        s = kt.shape
        return (s[0], s[1], s[3], s[2])
    return tuple(kt.shape[i] for i in _k_perm(m))  # type: ignore[union-attr]


def _scale(m: Match) -> float | None:
    node = m.get("scale")
    if node is None:
        return 1.0
    c = scalar_value(m["c"])
    if c is None or m["c"].dtype != m["q"].dtype:
        return None
    if node.op == "Div":
        return None if c == 0 else 1.0 / c
    return c


def _check_mask(m: Match, scores: Value) -> MatchResult:
    mask = m.get("mask")
    if mask is None:
        return MatchResult.success()
    if mask.dtype != scores.dtype or mask.rank is None or not 1 <= mask.rank <= 4:
        return MatchResult.fail(f"mask {mask.name!r} is not an additive mask of rank 1 to 4")
    for md, sd in zip(reversed(mask.shape), reversed(scores.shape), strict=False):
        if sd == 1 and md != 1:
            return MatchResult.fail(f"mask {mask.name!r} broadcasts the scores to a larger shape")
    if mask.shape and mask.shape[-1] == 1 and scores.shape[-1] != 1:
        return MatchResult.fail(f"mask {mask.name!r} broadcasts over the keys")
    return MatchResult.success()


def _check_core(m: Match) -> MatchResult:
    q, v, scores = m["q"], m["v"], m.node("qk").outputs[0]
    if not q.dtype.is_float or q.rank != 4 or v.rank != 4 or scores.rank != 4:
        return MatchResult.fail("Q, K^T and V are not 4-D float tensors")
    k = _k_shape(m)
    if k is None or not all(_same(q.shape[i], k[i]) and _same(q.shape[i], v.shape[i])
                            for i in (0, 1)):  # fmt: skip
        return MatchResult.fail("Q, K and V differ in batch or head dims")
    axis = int(m.node("softmax").attr("axis"))
    if axis not in (-1, 3):
        return MatchResult.fail(f"Softmax over axis {axis}, not the keys")
    if _scale(m) is None:
        return MatchResult.fail("the scale is not a usable scalar constant")
    return _check_mask(m, scores)


def _to_attention(b: Builder, m: Match) -> Value:
    perm = _k_perm(m)
    if perm is None:
        k = b.op("Transpose", m["kt_v"], perm=[0, 1, 3, 2])
    elif perm == [0, 1, 2, 3]:
        k = m["k"]
    else:
        k = b.op("Transpose", m["k"], perm=perm)
    scale = _scale(m)
    assert scale is not None
    return b.op("Attention", m["q"], k, m["v"], m.get("mask"), scale=scale)


# -- 2. head split / merge ------------------------------------------------------------------
def _split(name: str) -> Op:
    reshape = Op("Reshape", Var(name), Var(f"{name}_shape"), name=f"{name}_reshape")
    return Op("Transpose", reshape, name=f"{name}_perm")


def _heads_pattern() -> Op:
    att = Op("Attention", _split("q"), _split("k"), _split("v"), Var("mask", optional=True),
             name="att")  # fmt: skip
    merged = Op("Transpose", att, name="merge_perm")
    return Op("Reshape", merged, Var("merge_shape"), name="merge")


def _heads(m: Match, name: str) -> tuple[int, int] | None:
    """(heads, head size) of the split of ``name`` ([B, S, h*d] -> [B, h, S, d]), or None."""
    x, split = m[name], m.node(f"{name}_reshape")
    out = split.outputs[0].shape
    if x.rank != 3 or out is None or len(out) != 4 or split.attr("allowzero"):
        return None
    h, d = out[2], out[3]
    if not (_same(x.shape[0], out[0]) and _same(x.shape[1], out[1])):
        return None
    if not (isinstance(h, int) and isinstance(d, int) and x.shape[2] == h * d):
        return None
    return h, d


def _perm_is(node: Node, perm: list[int]) -> bool:
    return [int(a) for a in node.attr("perm") or []] == perm


def _check_heads(m: Match) -> MatchResult:
    att = m.node("att")
    if att.attr("q_num_heads") is not None or att.attr("kv_num_heads") is not None:
        return MatchResult.fail("the Attention already splits heads")
    if any(o.uses or m.is_graph_output(o) for o in att.outputs[1:]):
        return MatchResult.fail("the Attention's cache/score outputs are used")
    names = ("q_perm", "k_perm", "v_perm", "merge_perm")
    if not all(_perm_is(m.node(n), _HEADS_PERM) for n in names):
        return MatchResult.fail("the head transposes are not [0, 2, 1, 3]")
    hq, hk, hv = (_heads(m, n) for n in ("q", "k", "v"))
    if hq is None or hk is None or hv is None or hk[0] != hv[0]:
        return MatchResult.fail("Q/K/V are not [B, S, heads*size] split into heads")
    if not (_same(m["q"].shape[0], m["k"].shape[0]) and _same(m["k"].shape[1], m["v"].shape[1])):
        return MatchResult.fail("Q/K/V batch or key lengths differ")
    merged, out = m.node("merge_perm").outputs[0], m.node("merge").outputs[0]
    if merged.rank != 4 or out.rank != 3 or m.node("merge").attr("allowzero"):
        return MatchResult.fail("the merge is not [B, S, h, dv] -> [B, S, h*dv]")
    s, o = merged.shape, out.shape
    if not (_same(s[0], o[0]) and _same(s[1], o[1]) and o[2] == hq[0] * hv[1]):  # type: ignore[index]
        return MatchResult.fail("the merge is not [B, S, h, dv] -> [B, S, h*dv]")
    return MatchResult.success()


def _to_attention_3d(b: Builder, m: Match) -> Value:
    att = m.node("att")
    hq, hk = _heads(m, "q"), _heads(m, "k")
    assert hq is not None and hk is not None
    attrs = dict(att.attrs, q_num_heads=hq[0], kv_num_heads=hk[0])
    return b.op("Attention", m["q"], m["k"], m["v"], m.get("mask"), **attrs)


rules = RuleSet(
    [
        *(Rule("Attention", p, _to_attention, _check_core) for p in _core_patterns()),
        Rule("Attention+Heads", _heads_pattern(), _to_attention_3d, _check_heads),
    ]
)
"""Attention recognition rules."""
