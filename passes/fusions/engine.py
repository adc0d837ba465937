"""A small pattern-rewrite engine: rule = pattern + check + rewrite.

Patterns are typed trees matched from a value back through its producers:

- :class:`Var` matches any value and binds it (a name bound twice must bind the
  same value: ``Mul(Var("x"), Op("Sigmoid", Var("x")))`` is ``x * sigmoid(x)``);
- :class:`Const` matches a constant value (optionally only scalars, or only
  values close to a number) and binds it;
- :class:`Op` matches a value produced by a node of that op whose inputs match
  the sub-patterns (``commute=True`` also tries the two inputs swapped), and
  binds the node;
- :class:`Or` tries alternatives in order.

Matching backtracks, so commuted operands and alternatives combine freely. A
rule's pattern is an :class:`Op`; its op is the *anchor*: the engine visits
the nodes of every graph in topological order and tries the rules anchored at
the node's op. The matched nodes (every :class:`Op` bound) replace the anchor:
the engine refuses a match whose intermediate values (outputs of matched
nodes other than the anchor) are read outside the match or are graph outputs,
then calls ``check(match) -> MatchResult`` (``MatchResult.fail(reason)`` says
why not; logged at debug level), then ``rewrite(builder, match)``, which
returns the values replacing the anchor's outputs. The new nodes go where the
anchor was; the replacement values take over the anchor outputs' names (and
graph-output slots); the matched nodes are removed.

Trainable weights (``passes.freeze``): a rewrite that creates constants
(:meth:`Builder.const`) while a matched node reads a trainable constant is
undone before anything is inserted (logged at info with the reason), since the
new constants would bake the weight in. A rewrite must therefore only build
through its :class:`Builder`, never edit the graph itself. Rewrites that reuse
the weight Values (conv + activation) fire as usual.

:class:`RulePass` counts per rule: ``matched`` (pattern matches found),
``rejected`` (refused by the escape check, ``check`` or the trainable rule),
``trainable`` (of those, refused for a trainable weight) and ``fired``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ir import DataType, Graph, Node, Value
from ir.ops import get_op
from passes.base import Pass, PassContext
from passes.freeze import is_trainable

__all__ = [
    "Builder",
    "Const",
    "Match",
    "MatchResult",
    "Op",
    "Or",
    "Pattern",
    "Rule",
    "RulePass",
    "RuleSet",
    "RuleStats",
    "Var",
    "scalar_value",
]

logger = logging.getLogger(__name__)


# -- patterns ------------------------------------------------------------------------
class Pattern:
    """Base class: ``match(value, bindings)`` yields every extended binding."""

    def match(self, value: Value | None, b: dict[str, Any]) -> Iterator[dict[str, Any]]:
        raise NotImplementedError


@dataclass(frozen=True)
class Var(Pattern):
    """Any value (None too when ``optional``), bound to ``name``."""

    name: str
    optional: bool = False

    def match(self, value: Value | None, b: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if value is None and not self.optional:
            return
        if self.name in b:
            if b[self.name] is value:
                yield b
            return
        yield {**b, self.name: value}


def scalar_value(v: Value | None) -> float | None:
    """The number held by a one-element float/int constant, else None."""
    if v is None or v.const is None or v.const.size != 1 or v.const.dtype == object:
        return None
    if not (np.issubdtype(v.const.dtype, np.number)):
        return None
    return float(v.const.reshape(-1)[0])


@dataclass(frozen=True)
class Const(Pattern):
    """A constant; with ``value`` a one-element constant close to that number."""

    name: str
    value: float | None = None
    rtol: float = 1e-5

    def match(self, value: Value | None, b: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if value is None or value.const is None:
            return
        if self.value is not None:
            got = scalar_value(value)
            if got is None or not np.isclose(got, self.value, rtol=self.rtol, atol=0):
                return
        yield from Var(self.name).match(value, b)


@dataclass(frozen=True)
class Op(Pattern):
    """A value produced (output 0) by a node of ``op`` whose inputs match ``inputs``.

    Inputs past the listed ones must be omitted; ``commute`` also tries the
    first two inputs swapped. The node is bound to ``name`` (or an automatic one).
    """

    op: str
    inputs: tuple[Pattern, ...]
    name: str = ""
    commute: bool = False

    def __init__(self, op: str, *inputs: Pattern, name: str = "", commute: bool = False) -> None:
        object.__setattr__(self, "op", op)
        object.__setattr__(self, "inputs", tuple(inputs))
        object.__setattr__(self, "name", name or f"_{op}_{id(self)}")
        object.__setattr__(self, "commute", commute)

    def match(self, value: Value | None, b: dict[str, Any]) -> Iterator[dict[str, Any]]:
        node = None if value is None else value.producer
        if node is None or node.op != self.op or node.outputs[0] is not value:
            return
        yield from self.match_node(node, b)

    def match_node(self, node: Node, b: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if self.name in b:
            if b[self.name] is node:
                yield b
            return
        ins = list(node.inputs)
        if any(v is not None for v in ins[len(self.inputs) :]):
            return
        ins += [None] * (len(self.inputs) - len(ins))
        orders = [ins[: len(self.inputs)]]
        if self.commute and len(self.inputs) >= 2:
            orders.append([ins[1], ins[0], *ins[2 : len(self.inputs)]])
        for order in orders:
            yield from self._match_inputs(order, 0, {**b, self.name: node})

    def _match_inputs(
        self, values: list[Value | None], i: int, b: dict[str, Any]
    ) -> Iterator[dict[str, Any]]:
        if i == len(self.inputs):
            yield b
            return
        for b2 in self.inputs[i].match(values[i], b):
            yield from self._match_inputs(values, i + 1, b2)

    def op_names(self) -> Iterator[str]:
        yield self.name
        for p in self.inputs:
            yield from _op_names(p)


@dataclass(frozen=True)
class Or(Pattern):
    """The first alternatives that match, in order (all are tried on backtracking)."""

    options: tuple[Pattern, ...]

    def __init__(self, *options: Pattern) -> None:
        object.__setattr__(self, "options", tuple(options))

    def match(self, value: Value | None, b: dict[str, Any]) -> Iterator[dict[str, Any]]:
        for p in self.options:
            yield from p.match(value, b)


def _op_names(p: Pattern) -> Iterator[str]:
    if isinstance(p, Op):
        yield from p.op_names()
    elif isinstance(p, Or):
        for q in p.options:
            yield from _op_names(q)


# -- matches and results --------------------------------------------------------------
@dataclass(frozen=True)
class MatchResult:
    """Outcome of a check: truthy on success, else carries the reason."""

    ok: bool
    reason: str = ""

    @classmethod
    def fail(cls, reason: str) -> MatchResult:
        return cls(False, reason)

    @classmethod
    def success(cls) -> MatchResult:
        return cls(True)

    def __bool__(self) -> bool:
        return self.ok


@dataclass
class Match:
    """A successful pattern match: bindings by name, the anchor and all matched nodes."""

    root: Node
    bindings: dict[str, Any]
    nodes: list[Node]
    graph: Graph
    top: Graph
    ctx: PassContext = field(default_factory=PassContext)
    output_ids: dict[int, Value] | None = None  # every graph output of ``top`` by id (a cache)

    def __getitem__(self, name: str) -> Any:
        return self.bindings[name]

    def get(self, name: str) -> Any:
        return self.bindings.get(name)

    def node(self, name: str) -> Node:
        node = self.bindings[name]
        assert isinstance(node, Node)
        return node

    def is_graph_output(self, v: Value) -> bool:
        if self.output_ids is None:
            self.output_ids = _output_ids(self.top)
        return self.output_ids.get(id(v)) is v


class Builder:
    """Creates the replacement nodes and constants of one rewrite."""

    def __init__(self, match: Match) -> None:
        self.match = match
        self.nodes: list[Node] = []
        self.consts: list[Value] = []

    def op(self, op: str, *inputs: Value | None, **attrs: Any) -> Value:
        """A new node of ``op`` (named after the anchor); returns its first output."""
        return self.node(op, inputs, 1, **attrs).outputs[0]

    def node(self, op: str, inputs: Sequence[Value | None], num_outputs: int,
             **attrs: Any) -> Node:  # fmt: skip
        """A new node of ``op`` with ``num_outputs`` outputs (named after the anchor)."""
        graph = self.match.top
        name = graph.unique_name(f"{self.match.root.name}_{op.lower()}")
        outs = [Value(graph.unique_name(f"{name}_out" + (f"{i}" if i else "")))
                for i in range(num_outputs)]  # fmt: skip
        ins = list(inputs)
        while ins and ins[-1] is None:  # trailing omitted optionals are left out
            ins.pop()
        node = Node(op, ins, outs, attrs=dict(attrs), name=name)
        self.nodes.append(node)
        return node

    def const(self, array: np.ndarray, base: str) -> Value:
        """A new constant named after ``base``."""
        v = Value(self.match.top.unique_name(base), const=np.require(array, requirements="C"))
        self.consts.append(v)
        return v

    def discard(self) -> None:
        """Undo the rewrite: the new nodes stop reading the graph's values."""
        for n in self.nodes:
            n.detach_inputs()
        self.nodes.clear()
        self.consts.clear()


CheckFn = Callable[[Match], MatchResult]
RewriteFn = Callable[[Builder, Match], "Value | Sequence[Value] | Mapping[Value, Value]"]


@dataclass(frozen=True)
class Rule:
    """pattern + check + rewrite; ``name`` appears in logs and statistics.

    ``takes_over``: names of bound nodes (other than the anchor) whose outputs the
    rewrite replaces too; the escape check lets those outputs be read outside the
    match, ``check`` must refuse what the rewrite cannot replace, and ``rewrite``
    returns a mapping ``{old value: new value}`` covering every such output still
    read (the anchor's outputs included).
    """

    name: str
    pattern: Op
    rewrite: RewriteFn
    check: CheckFn = field(default=lambda m: MatchResult.success())
    takes_over: tuple[str, ...] = ()

    @property
    def anchor(self) -> str:
        return self.pattern.op


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]

    def __init__(self, rules: Sequence[Rule]) -> None:
        object.__setattr__(self, "rules", tuple(rules))

    def __add__(self, other: RuleSet) -> RuleSet:
        return RuleSet([*self.rules, *other.rules])

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)


# -- application ----------------------------------------------------------------------
def _escapes(match: Match, takes_over: Sequence[str] = ()) -> str | None:
    """Why a matched intermediate value is needed outside the match, or None.

    The anchor's outputs after the first must be unused too (rules replace output 0);
    outputs of the nodes bound to ``takes_over`` names are exempt (the rewrite replaces them).
    """
    inside = {id(n) for n in match.nodes}
    exempt = {id(match.bindings[n]) for n in takes_over if n in match.bindings}
    for node in match.nodes:
        if node.graph is not match.graph:
            return f"{node.name!r} belongs to another graph"
    if id(match.root) not in exempt:
        for out in match.root.outputs[1:]:
            if out.uses or match.is_graph_output(out):
                return f"{out.name!r} (output of the anchor past the first) is used"
    for node in match.nodes:
        if node is match.root or id(node) in exempt:
            continue
        for out in node.outputs:
            if match.is_graph_output(out):
                return f"{out.name!r} is a graph output"
            for user, _ in out.uses:
                if id(user) not in inside:
                    return f"{out.name!r} is also read by {user.name!r} ({user.op})"
    return None


def _output_ids(top: Graph) -> dict[int, Value]:
    """Every graph output of ``top`` and its subgraphs, by id (the values are kept alive)."""
    return {id(o): o for g in top.all_graphs() for o in g.outputs}


def _matches(
    rule: Rule,
    node: Node,
    graph: Graph,
    top: Graph,
    ctx: PassContext,
    output_ids: dict[int, Value] | None = None,
) -> Iterator[Match]:
    names = list(rule.pattern.op_names())
    for b in rule.pattern.match_node(node, {}):
        nodes: list[Node] = []
        seen: set[int] = set()
        for n in names:
            bound = b.get(n)
            if isinstance(bound, Node) and id(bound) not in seen:
                seen.add(id(bound))
                nodes.append(bound)
        yield Match(node, b, nodes, graph, top, ctx, output_ids)


@dataclass
class RuleStats:
    """Per-rule counters (see the module docstring)."""

    matched: int = 0
    rejected: int = 0
    trainable: int = 0
    fired: int = 0


def try_rule(
    rule: Rule,
    node: Node,
    graph: Graph,
    top: Graph,
    ctx: PassContext | None = None,
    stats: RuleStats | None = None,
    output_ids: dict[int, Value] | None = None,
    rejections: list[tuple[str, str]] | None = None,
) -> bool:
    """Apply ``rule`` at ``node`` when a match passes the checks; True when rewritten.

    ``output_ids``: every graph output of ``top`` by id, when the caller caches them
    (kept current by the rewrite). ``rejections`` gets ``(rule name, reason)`` for
    every refused match.
    """
    stats = stats if stats is not None else RuleStats()
    for match in _matches(rule, node, graph, top, ctx or PassContext(), output_ids):
        stats.matched += 1
        reason = _escapes(match, rule.takes_over)
        if reason is None:
            result = rule.check(match)
            reason = None if result else result.reason
        if reason is None:
            builder = Builder(match)
            result_values = rule.rewrite(builder, match)
            reason = _bakes_trainable(builder, match)
            if reason is not None:
                builder.discard()
                stats.trainable += 1
                logger.info("%s at %s skipped: %s", rule.name, node.name, reason)
        if reason is not None:
            stats.rejected += 1
            logger.debug("%s at %s: %s", rule.name, node.name, reason)
            if rejections is not None:
                rejections.append((rule.name, reason))
            continue
        _apply(rule, match, builder, result_values)
        stats.fired += 1
        logger.debug("%s rewrote %s", rule.name, node.name)
        return True
    return False


def _bakes_trainable(builder: Builder, match: Match) -> str | None:
    """Why the rewrite would bake a trainable weight into a new constant, or None."""
    if not builder.consts:
        return None
    for node in match.nodes:
        for v in node.inputs:
            if is_trainable(v):
                assert v is not None
                return f"weight {v.name!r} is trainable and the rewrite creates new constants"
    return None


def _apply(
    rule: Rule, match: Match, builder: Builder,
    result: Value | Sequence[Value] | Mapping[Value, Value],
) -> None:  # fmt: skip
    root, graph = match.root, match.graph
    if isinstance(result, Mapping):
        pairs = list(result.items())
    else:
        new_values = [result] if isinstance(result, Value) else list(result)
        pairs = list(zip(root.outputs[: len(new_values)], new_values, strict=True))
    graph.insert_before(root, builder.nodes)
    created = {id(v) for n in builder.nodes for v in n.outputs}
    for old, new in pairs:
        if match.is_graph_output(old):  # rare: scan the graph tree for the output slots
            old.replace_all_uses_with(new, match.top)
            ids = match.output_ids
            if ids is not None:
                ids.pop(id(old), None)
                ids[id(new)] = new
        else:
            old.replace_all_uses_with(new)
        if id(new) in created:
            if new.shape is None:
                new.shape = old.shape
            if new.dtype == DataType.UNDEFINED:
                new.dtype = old.dtype
    graph.remove(match.nodes, safe=True)
    for old, new in pairs:
        if id(new) in created:  # the replacement takes over the tensor's name
            new.name = old.name
    if isinstance(result, Mapping):  # readers of taken-over outputs may precede the anchor
        graph.sort()
    for n in builder.nodes:
        for key in list(n.attrs):
            if key not in get_op(n.op).attrs:
                raise AssertionError(f"{rule.name}: {n.op} has no attribute {key!r}")


class RulePass(Pass):
    """Applies a rule set to every graph (and subgraph) until no rule fires."""

    name = "Fusions"

    def __init__(
        self, rules: RuleSet, ctx: PassContext | None = None, max_rounds: int = 20
    ) -> None:
        super().__init__(ctx)
        self.rules = rules
        self.max_rounds = max_rounds
        self.counts: dict[str, int] = {}
        self.stats: dict[str, RuleStats] = {}
        self.rejections: dict[str, list[tuple[str, str]]] = {}
        """Node name -> (rule, reason) of every refused match at it, in the last round."""

    def run(self, graph: Graph) -> bool:
        by_anchor: dict[str, list[Rule]] = {}
        for rule in self.rules:
            by_anchor.setdefault(rule.anchor, []).append(rule)
        changed = False
        for _ in range(self.max_rounds):
            if not self._round(graph, by_anchor):
                break
            changed = True
        return changed

    def _round(self, top: Graph, by_anchor: dict[str, list[Rule]]) -> bool:
        changed = False
        outputs = _output_ids(top)  # kept current by each rewrite (it may take a slot)
        rejections: dict[str, list[tuple[str, str]]] = {}
        for g in list(top.all_graphs()):
            for node in list(g):
                if node.graph is not g:  # removed by an earlier rewrite
                    continue
                why: list[tuple[str, str]] = []
                for rule in by_anchor.get(node.op, ()):
                    stats = self.stats.setdefault(rule.name, RuleStats())
                    if try_rule(rule, node, g, top, self.ctx, stats, outputs, why):
                        self.counts[rule.name] = self.counts.get(rule.name, 0) + 1
                        changed = True
                        break
                else:
                    if why:
                        rejections[node.name] = why
        self.rejections = rejections
        return changed

    def rule_stats(self) -> dict[str, dict[str, int]]:
        """Per rule that matched at least once: matched / rejected / trainable / fired."""
        return {
            name: {k: getattr(st, k) for k in ("matched", "rejected", "trainable", "fired")}
            for name, st in self.stats.items()
            if st.matched
        }
