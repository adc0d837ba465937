"""Why fusable-looking nodes are still standalone after the optimization pipeline.

After ``--optimize full`` a CNN should have no standalone BatchNormalization,
activation, bias Add or Transpose node where a fusion could apply. This module
lists every one that remains, with the reason no fusion took it:

- kinds: ``BatchNormalization``; ``activation`` (the ops of
  :data:`passes.fusions.activation.FUSABLE` and every op with the
  ``ACTIVATION`` trait); ``bias Add`` (Add/Sub with exactly one constant
  operand); ``Transpose``;
- reason: first the fusion engine's own refusals recorded at the node in the
  last round of :class:`passes.fusions.engine.RulePass` (``"rule: why"``; for
  a Transpose, those at its readers, which anchor the rules it is part of),
  else a structural diagnosis from the node's producer and readers ("follows
  an Add (residual)", "BN input is a Concat, not a conv", "Transpose at graph
  input", ...). ``category`` is the short form the one-line summary groups by.

:func:`unfused_report` returns the JSON-able report (``conversion.unfused`` in
``convert --report``), :func:`summary_line` its one-line progress form.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ir import Graph, Node, Trait, Value, all_ops
from ir.ops.fused import BINARY_ACT
from passes.fusions.activation import FUSABLE, activation_of

__all__ = ["KINDS", "Unfused", "collect_rejections", "find_unfused", "summary_line",
           "unfused_report"]  # fmt: skip

KINDS = ("BatchNormalization", "activation", "bias Add", "Transpose")
"""The node kinds the report covers, in summary order."""

_SHORT = {"BatchNormalization": "BN", "bias Add": "bias Add"}
_CONVS = ("Conv", "ConvTranspose")
_FUSED = ("ConvAct", "MatMulAct", *BINARY_ACT)
_BINARY = {"Add": "an Add", "Sub": "a Sub", "Mul": "a Mul", "Div": "a Div"}

Rejections = Mapping[str, Sequence[tuple[str, str]]]


@dataclass
class Unfused:
    """One standalone node: its kind, the full reason and the short category."""

    node: str
    op: str
    kind: str
    reason: str
    category: str
    refused: list[dict[str, str]] = field(default_factory=list)


def _activation_ops() -> frozenset[str]:
    traits = {n for n, d in all_ops().items() if Trait.ACTIVATION in d.traits}
    return frozenset(traits | set(FUSABLE))


def _kind(node: Node, activations: frozenset[str]) -> str | None:
    if node.op == "BatchNormalization":
        return "BatchNormalization"
    if node.op in activations:
        return "activation"
    if node.op == "Transpose":
        return "Transpose"
    if node.op in ("Add", "Sub") and _bias_operand(node) is not None:
        return "bias Add"
    return None


def _bias_operand(node: Node) -> Value | None:
    """The non-constant operand of an Add/Sub with exactly one constant operand."""
    ins = [v for v in node.inputs if v is not None]
    consts = [v for v in ins if v.const is not None]
    if len(ins) != 2 or len(consts) != 1:
        return None
    return next(v for v in ins if v.const is None)


def _data_input(node: Node, kind: str) -> Value | None:
    return _bias_operand(node) if kind == "bias Add" else node.input(0)


def _boundary(v: Value | None, outer: set[int], what: str) -> tuple[str, str] | None:
    """A reason when ``v`` is a graph input or comes from outside the graph."""
    if v is None:
        return f"{what} has no input", "no input"
    if v.producer is None and v.const is None:
        where = "graph input" if id(v) in outer else "outer-scope input"
        return f"{what} at {where} {v.name!r}", where
    return None


def _activation_reason(node: Node, p: Node) -> tuple[str, str]:
    if node.op not in FUSABLE:
        return f"{node.op} is not an activation ConvAct/MatMulAct carry", "not fusable"
    if activation_of(node) is None:
        return f"{node.op} parameters are not constant scalars", "non-constant params"
    if p.op in _FUSED:
        act = p.attr("activation")
        if act != "none":
            return f"follows {p.op} {p.name!r} that already applies {act}", f"after {p.op}"
    if p.op in _BINARY and all(v is not None and v.const is None for v in p.inputs):
        label = "residual Add" if p.op == "Add" else f"{p.op} of two tensors"
        return (f"activation follows {_BINARY[p.op]} of two tensors ({label}); "
                "FuseBinaryActivations did not run", label)  # fmt: skip
    if p.op == "ConvTranspose":
        return "follows a ConvTranspose: ConvAct is Conv only", "after ConvTranspose"
    return f"activation follows a {p.op}, which has no fused activation", f"after {p.op}"


def _bn_reason(p: Node) -> tuple[str, str]:
    if p.op in _CONVS:
        return f"the {p.op} weights or bias are not constant", "non-constant conv"
    return f"BN input is a {p.op}, not a conv", f"after {p.op}"


def _bias_reason(node: Node, p: Node) -> tuple[str, str]:
    if p.op in _FUSED and p.attr("activation") != "none":
        return (f"follows {p.op} {p.name!r} with activation {p.attr('activation')}: the bias "
                "cannot move before it", f"after {p.op}+act")  # fmt: skip
    if p.op == "MatMulAct":
        return "follows a MatMulAct that already has a bias", "second bias"
    return f"constant {node.op} after a {p.op}, not a conv or matmul", f"after {p.op}"


def _transpose_reason(node: Node, p: Node, outputs: set[int]) -> tuple[str, str]:
    perm = node.attr("perm")
    readers = sorted({u.op for u in node.outputs[0].consumers()})
    if id(node.outputs[0]) in outputs:
        out = node.outputs[0].name
        return f"Transpose {perm} produces the graph output {out!r}", "graph output"
    return (f"Transpose {perm} of a {p.op} output read by {', '.join(readers) or 'nothing'}: "
            "no fusion absorbs it", f"after {p.op}")  # fmt: skip


def _category(rule: str, why: str) -> str:
    if "is also read by" in why:
        return "output read elsewhere"
    if "is a graph output" in why:
        return "intermediate is a graph output"
    if "no MindSpore Lite fused form" in why:
        return why.split(" has ")[0] + ": no MindSpore Lite fused form"
    if "trainable" in why:
        return "trainable weight"
    return f"{rule} refused"


def _refused(node: Node, kind: str, rejections: Rejections) -> list[tuple[str, str]]:
    found = list(rejections.get(node.name, ()))
    if kind == "Transpose":  # rules through a Transpose are anchored at its readers
        for user in node.outputs[0].consumers():
            found += rejections.get(user.name, ())
    return found


def _diagnose(node: Node, kind: str, outputs: set[int], inputs: set[int],
              rejections: Rejections, fusions_ran: bool) -> Unfused:  # fmt: skip
    refused = _refused(node, kind, rejections)
    listed = [{"rule": r, "reason": why} for r, why in refused]
    v = _data_input(node, kind)
    what = _SHORT.get(kind, node.op) if kind != "activation" else node.op
    at = _boundary(v, inputs, what)
    if refused:
        rule, why = refused[0]
        reason, category = f"{rule}: {why}", _category(rule, why)
    elif at is not None:
        reason, category = at
    elif not fusions_ran:
        reason, category = "the fusions did not run (level or --disable-pass)", "fusions off"
    else:
        p = v.producer  # type: ignore[union-attr]
        assert p is not None
        if kind == "activation":
            reason, category = _activation_reason(node, p)
        elif kind == "BatchNormalization":
            reason, category = _bn_reason(p)
        elif kind == "bias Add":
            reason, category = _bias_reason(node, p)
        else:
            reason, category = _transpose_reason(node, p, outputs)
    return Unfused(node.name, node.op, kind, reason, category, listed)


def find_unfused(
    graph: Graph, rejections: Rejections | None = None, fusions_ran: bool = True
) -> list[Unfused]:
    """Every remaining node of :data:`KINDS` in ``graph`` (subgraphs too), with its reason."""
    activations = _activation_ops()
    outputs = {id(o) for g in graph.all_graphs() for o in g.outputs}
    inputs = {id(i) for g in graph.all_graphs() for i in g.inputs}
    found = []
    for node in graph.all_nodes():
        kind = _kind(node, activations)
        if kind is not None:
            found.append(_diagnose(node, kind, outputs, inputs, rejections or {}, fusions_ran))
    return found


def collect_rejections(passes: Iterable[Any]) -> tuple[dict[str, list[tuple[str, str]]], bool]:
    """(node name -> refusals of the last fusion round, whether a fusion pass ran) of a pipeline."""
    from passes.fusions.engine import RulePass
    from passes.manager import FixedPoint

    out: dict[str, list[tuple[str, str]]] = {}
    ran = False
    for p in passes:
        if isinstance(p, FixedPoint):
            nested, nested_ran = collect_rejections(p.passes)
            ran |= nested_ran
        elif isinstance(p, RulePass):
            nested, ran = p.rejections, True
        else:
            continue
        for name, whys in nested.items():
            out.setdefault(name, []).extend(whys)
    return out, ran


def unfused_report(graph: Graph, passes: Iterable[Any] = ()) -> dict[str, Any]:
    """``{"counts": {kind: n}, "by_category": {"op (category)": n}, "nodes": [...]}``."""
    rejections, ran = collect_rejections(passes)
    found = find_unfused(graph, rejections, ran)
    counts = Counter(u.kind for u in found)
    groups = Counter(f"{u.op} ({u.category})" for u in found)
    return {
        "counts": {k: counts.get(k, 0) for k in KINDS},
        "by_category": dict(groups.most_common()),
        "nodes": [asdict(u) for u in found],
    }


def summary_line(report: Mapping[str, Any]) -> str:
    """``unfused: 16 Relu (residual Add), 3 Transpose (graph output), 0 BN, 0 bias Add``."""
    parts = [f"{n} {group}" for group, n in report["by_category"].items()]
    parts += [f"0 {_SHORT.get(k, k)}" for k, n in report["counts"].items() if n == 0]
    return "unfused: " + ", ".join(parts)
