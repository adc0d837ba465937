"""Merge a recurrent layer's direction axis into its output: LSTM/GRU -> LSTMMerged/GRUMerged.

ONNX ``LSTM``/``GRU`` return ``Y`` as ``[S, D, B, H]`` (``layout`` 0) or
``[B, S, D, H]`` (``layout`` 1), ``D`` directions of ``H`` features. Frameworks
use ``[S, B, D*H]`` (PyTorch ``nn.LSTM``/``nn.GRU``, cuDNN, TFLite's
bidirectional sequence LSTM with ``merge_outputs``), so exporters append the
conversion to every recurrent layer (``torch.onnx`` does it for each
bidirectional one)::

    layout 0:  Reshape(Transpose(Y, perm=[0, 2, 1, 3]), [0, 0, D*H])   -> [S, B, D*H]
    layout 1:  Reshape(Y, [0, 0, D*H])                                  -> [B, S, D*H]

(target ``[S, B, -1]`` and static sizes equally). Both become one
``LSTMMerged``/``GRUMerged`` node (``ir/ops/fused.py``): the same recurrence,
weights and attributes, whose ``Y`` is the merged tensor; ``Y_h``/``Y_c`` are
taken over unchanged. The values are exactly the same (a Transpose and a
Reshape only move elements). Why it is worth a node: a runtime writes each
step's hidden state for direction ``d`` at ``[t, :, d*H:(d+1)*H]`` of the
merged buffer as it computes it (a strided store), so the full-sequence copy
the Transpose makes, and the Reshape's kernel launch, disappear.

Refused when ``Y`` is read anywhere else (the merged node has no unmerged
``Y``), when the intermediate Transpose is read elsewhere, or when the Reshape
target is not provably ``[S, B, D*H]``.
"""

from __future__ import annotations

from ir import Node, Value
from passes.fusions.engine import Builder, Match, MatchResult, Op, Rule, RuleSet, Var

__all__ = ["MERGED", "rules"]

MERGED = {"LSTM": "LSTMMerged", "GRU": "GRUMerged"}
"""Recurrent op -> its merged-output fused op."""

_ARITY = {"LSTM": 8, "GRU": 6}
_SWAP = [0, 2, 1, 3]


def _rnn(op: str) -> Op:
    names = ("x", "w", "r", "b", "seq_lens", "h0", "c0", "p")[: _ARITY[op]]
    return Op(op, *(Var(n, optional=i >= 3) for i, n in enumerate(names)), name="rnn")


def _pattern(op: str, layout: int) -> Op:
    y = _rnn(op)
    if layout == 0:
        y = Op("Transpose", y, name="transpose")
    return Op("Reshape", y, Var("shape"), name="reshape")


def _hidden(rnn: Node) -> int | None:
    hidden = rnn.attr("hidden_size")
    r = rnn.input(2)
    if hidden is None and r is not None and r.shape is not None and isinstance(r.shape[-1], int):
        hidden = r.shape[-1]
    return None if hidden is None else int(hidden)


def _target_ok(target: list[int], dims: tuple, merged: int, allowzero: int) -> str | None:
    """Why ``target`` (a Reshape of a tensor with leading ``dims``) is not ``[*dims, merged]``."""
    if len(target) != 3:
        return f"Reshape target {target} is not rank 3"
    for t, d in zip(target[:2], dims, strict=True):
        if not ((t == 0 and not allowzero) or (isinstance(d, int) and t == d)):
            return f"Reshape target {target} does not keep dims {list(dims)}"
    if target[2] not in (merged, -1):
        return f"Reshape target {target} does not merge to {merged}"
    return None


def _check(m: Match) -> MatchResult:
    rnn, reshape = m.node("rnn"), m.node("reshape")
    y = rnn.outputs[0]
    readers = m.get("transpose") or reshape
    if len(y.uses) != 1 or y.uses[0][0] is not readers or m.is_graph_output(y):
        return MatchResult.fail(f"{rnn.op} output {y.name!r} is read elsewhere")
    if not y.dtype.is_float:
        return MatchResult.fail(f"{rnn.op} is not on floats")
    transpose = m.get("transpose")
    if transpose is not None and list(transpose.attr("perm") or []) != _SWAP:
        return MatchResult.fail(f"Transpose perm {transpose.attr('perm')} is not {_SWAP}")
    if (transpose is None) != bool(rnn.attr("layout")):
        return MatchResult.fail(f"{rnn.op} layout {rnn.attr('layout')} does not match the chain")
    hidden, shape = _hidden(rnn), m["shape"]
    if hidden is None:
        return MatchResult.fail(f"{rnn.op} hidden size is unknown")
    if shape.const is None:
        return MatchResult.fail("the Reshape target is not a constant")
    src = reshape.input(0)
    if src is None or src.shape is None or len(src.shape) != 4:
        return MatchResult.fail("the Reshape input's shape is unknown")
    dirs = 2 if rnn.attr("direction") == "bidirectional" else 1
    target = [int(t) for t in shape.const.reshape(-1)]
    why = _target_ok(target, tuple(src.shape[:2]), dirs * hidden, int(reshape.attr("allowzero")))
    return MatchResult.fail(why) if why else MatchResult.success()


def _merge(b: Builder, m: Match) -> dict[Value, Value]:
    rnn = m.node("rnn")
    new = b.node(MERGED[rnn.op], rnn.inputs, len(rnn.outputs), **rnn.attrs)
    out = {m.node("reshape").outputs[0]: new.outputs[0]}
    out.update(zip(rnn.outputs[1:], new.outputs[1:], strict=True))
    return out


rules = RuleSet(
    [
        Rule(f"{op}+MergeDirections", _pattern(op, layout), _merge, _check, takes_over=("rnn",))
        for op in MERGED
        for layout in (0, 1)
    ]
)
"""Merged-output rules: anchored at the Reshape, taking over the RNN's Y_h/Y_c."""
