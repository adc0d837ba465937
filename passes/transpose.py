"""Transpose cleanup: compose, merge, fold and push Transposes until few remain.

``Transpose(x, p)`` gives ``y`` with ``y.shape[i] == x.shape[p[i]]`` (ONNX; a
missing ``perm`` reverses the axes). The passes:

- :class:`ComposeTransposes`: ``Transpose(Transpose(x, p1), p2)`` is
  ``Transpose(x, q)`` with ``q[j] = p1[p2[j]]``; when ``q`` is the identity the
  readers read ``x`` directly (a graph output keeps its name: the producer of
  ``x`` is renamed, or the node becomes an Identity).
- :class:`MergeTransposes`: sibling Transposes of one value with equal perms
  become one.
- :class:`FoldConstantTransposes`: a Transpose of a constant is that constant,
  transposed.
- :class:`PushTransposes`: ``N(Transpose(x, p))`` becomes
  ``Transpose(N'(x), q)`` for the ops in :data:`PUSH_RULES` (elementwise and
  activation ops, Concat, Pad, Resize, Reduce*, Softmax, Slice, Cast) and,
  when a target ``layout`` is given, layout-sensitive ops whose ``format``
  then becomes that layout. ``N'`` is ``N`` with axis attributes/inputs
  remapped (``axis -> p[axis]``; per-axis lists such as pads and scales are
  permuted with ``p``); its other data inputs get the inverse transpose
  (folded into constants; broadcast constants are first unsqueezed to full
  rank). A push happens only when it does not add transposes: the input
  transposes it frees, plus the later transposes it will cancel (readers of
  an output that are all the inverse transpose), must be at least the
  transposes it inserts.
- :class:`TransposeToReshape`: a Transpose that moves only size-1 axes keeps
  the element order, so it is a Reshape.

Every pass runs over all graphs of the tree, repeats its sweep until nothing
changes (so one run is idempotent) and keeps graph input/output names.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ir import Graph, Node, QuantParams, Shape, Trait, Value, get_op, has_op
from passes.base import Pass, PassContext

__all__ = [
    "PUSH_RULES",
    "ComposeTransposes",
    "FoldConstantTransposes",
    "MergeTransposes",
    "PushTransposes",
    "Rewrite",
    "TransposeToReshape",
    "apply_rewrite",
    "compose",
    "insert_node",
    "inverse",
    "is_identity",
    "nchw_to_nhwc",
    "nhwc_to_nchw",
    "perm_of",
    "push_rule",
]

logger = logging.getLogger(__name__)

Perm = list[int]
_MAX_SWEEPS = 100


# -- permutations ----------------------------------------------------------------------
def nchw_to_nhwc(rank: int) -> Perm:
    """Channels first -> channels last: [0, 2, ..., r-1, 1]."""
    return [0, *range(2, rank), 1]


def nhwc_to_nchw(rank: int) -> Perm:
    """Channels last -> channels first: [0, r-1, 1, ..., r-2]."""
    return [0, rank - 1, *range(1, rank - 1)]


def inverse(p: Sequence[int]) -> Perm:
    out = [0] * len(p)
    for i, a in enumerate(p):
        out[a] = i
    return out


def compose(p1: Sequence[int], p2: Sequence[int]) -> Perm:
    """The perm of Transpose(Transpose(x, p1), p2)."""
    return [p1[j] for j in p2]


def is_identity(p: Sequence[int]) -> bool:
    return all(i == a for i, a in enumerate(p))


def perm_of(node: Node) -> Perm | None:
    """The resolved perm of a Transpose node (None when its rank is unknown)."""
    perm = node.attr("perm")
    if perm is not None:
        return [int(a) for a in perm]
    x = node.input(0)
    return None if x is None or x.rank is None else list(reversed(range(x.rank)))


def _permute(shape: Shape | None, p: Sequence[int]) -> Shape | None:
    return None if shape is None else tuple(shape[a] for a in p)


def _transpose_of(v: Value | None) -> tuple[Node, Perm] | None:
    """(Transpose node, perm) when ``v`` is produced by a Transpose with a known perm."""
    if v is None or v.producer is None or v.producer.op != "Transpose":
        return None
    p = perm_of(v.producer)
    return None if p is None else (v.producer, p)


def _output_ids(graph: Graph) -> set[int]:
    return {id(v) for g in graph.all_graphs() for v in g.outputs}


def new_transpose(graph: Graph, x: Value, perm: Sequence[int], out: Value | None = None) -> Node:
    """A Transpose node of ``x`` (not yet in a graph); ``out`` defaults to a new Value."""
    if out is None:
        out = Value(graph.unique_name(f"{x.name}_t"), x.dtype, _permute(x.shape, perm))
        out.quant = _permuted_quant(x.quant, perm)
    return Node("Transpose", [x], [out], {"perm": list(perm)}, graph.unique_name("Transpose"))


def insert_node(graph: Graph, anchor: Node, node: Node, after: bool = False) -> None:
    """Insert ``node`` (named with ``graph.unique_name``) next to ``anchor``.

    Keeps the graph's cache of taken names (which inserting drops) valid by adding
    the new names, so that naming many new nodes stays linear.
    """
    taken = graph.meta.get("_names")
    if after:
        graph.insert_after(anchor, node)
    else:
        graph.insert_before(anchor, node)
    if taken is not None:
        taken.add(node.name)
        taken.update(v.name for v in node.outputs)
        graph.meta["_names"] = taken


def _permuted_quant(q: QuantParams | None, p: Sequence[int]) -> QuantParams | None:
    """Quant params of Transpose(x, p) given x's (a per-axis axis moves with its axis)."""
    if q is None or q.axis is None:
        return q
    axis = q.axis % len(p)
    return QuantParams(q.scale, q.zero_point, p.index(axis), q.num_bits, q.min, q.max)


def _const_value(graph: Graph, base: str, array: np.ndarray) -> Value:
    return Value(graph.unique_name(base), const=np.ascontiguousarray(array))


def _const_ints(v: Value | None) -> list[int] | None:
    if v is None or v.const is None:
        return None
    return [int(a) for a in np.asarray(v.const).reshape(-1)]


# -- compose / merge / fold -------------------------------------------------------------
class _SweepPass(Pass):
    """Runs ``sweep(graph, subgraph)`` over every graph until a round changes nothing."""

    def run(self, graph: Graph) -> bool:
        changed = False
        for _ in range(_MAX_SWEEPS):
            round_changed = False
            for g in list(graph.all_graphs()):
                round_changed |= self.sweep(graph, g)
            if not round_changed:
                return changed
            changed = True
        logger.debug("%s stopped after %d sweeps", self.name, _MAX_SWEEPS)
        return changed

    def sweep(self, root: Graph, graph: Graph) -> bool:
        raise NotImplementedError


class ComposeTransposes(_SweepPass):
    """Transpose of a Transpose -> one Transpose, or nothing when they cancel."""

    name = "ComposeTransposes"

    def sweep(self, root: Graph, graph: Graph) -> bool:
        outputs = _output_ids(root)
        changed = False
        for node in graph:
            if node.graph is not graph or node.op != "Transpose":
                continue
            inner = _transpose_of(node.input(0))
            p2 = perm_of(node)
            if inner is None or p2 is None:
                continue
            t1, p1 = inner
            x = t1.input(0)
            assert x is not None
            q = compose(p1, p2)
            if is_identity(q):
                changed |= _bypass(root, outputs, graph, node, x)
            else:
                node.set_input(0, x)
                node.attrs["perm"] = q
                changed = True
            _drop_if_dead(outputs, t1)
        return changed


def _bypass(root: Graph, outputs: set[int], graph: Graph, node: Node, x: Value) -> bool:
    """Readers of ``node``'s output read ``x``; the node goes (or becomes an Identity).

    ``outputs`` (ids of the graph outputs of the tree) is kept up to date.
    """
    out = node.outputs[0]
    if id(out) in outputs:
        renamable = x.producer is not None and x.producer.graph is graph and id(x) not in outputs
        if not renamable:
            if node.op == "Identity":
                return False
            node.op, node.attrs = "Identity", {}
            node.set_input(0, x)
            return True
        x.name = out.name
        out.replace_all_uses_with(x, root)
        outputs.discard(id(out))
        outputs.add(id(x))
    else:
        out.replace_all_uses_with(x)
    graph.remove(node)
    return True


def _drop_if_dead(outputs: set[int], node: Node) -> None:
    if node.graph is None:
        return
    if any(o.uses for o in node.outputs) or any(id(o) in outputs for o in node.outputs):
        return
    node.graph.remove(node)


class MergeTransposes(_SweepPass):
    """Transposes of the same value with the same perm -> the first of them."""

    name = "MergeTransposes"

    def sweep(self, root: Graph, graph: Graph) -> bool:
        order = {id(n): i for i, n in enumerate(graph.nodes)}
        outputs = _output_ids(root)
        changed = False
        for v in graph.values():
            groups: dict[tuple[int, ...], list[Node]] = {}
            for user in v.consumers():
                p = perm_of(user) if user.op == "Transpose" and user.graph is graph else None
                if p is not None:
                    groups.setdefault(tuple(p), []).append(user)
            for same in groups.values():
                same.sort(key=lambda n: order[id(n)])
                keep = same[0].outputs[0]
                for dup in same[1:]:
                    if id(dup.outputs[0]) in outputs:
                        continue
                    dup.outputs[0].replace_all_uses_with(keep)
                    graph.remove(dup)
                    changed = True
        return changed


class FoldConstantTransposes(_SweepPass):
    """Transpose(constant) -> the transposed constant."""

    name = "FoldConstantTransposes"

    def sweep(self, root: Graph, graph: Graph) -> bool:
        outputs = _output_ids(root)
        changed = False
        for node in graph:
            if node.op != "Transpose" or node.graph is not graph:
                continue
            x, out, p = node.input(0), node.outputs[0], perm_of(node)
            if x is None or x.const is None or p is None or id(out) in outputs:
                continue
            folded = Value(out.name, const=np.ascontiguousarray(np.transpose(x.const, p)))
            folded.quant = _permuted_quant(x.quant, p)
            out.replace_all_uses_with(folded)
            graph.remove(node)
            changed = True
        return changed


class TransposeToReshape(_SweepPass):
    """A Transpose that moves only size-1 axes -> Reshape to its output shape."""

    name = "TransposeToReshape"

    def sweep(self, root: Graph, graph: Graph) -> bool:
        changed = False
        for node in graph:
            if node.op != "Transpose" or node.graph is not graph:
                continue
            target = _reshape_target(node)
            if target is None:
                continue
            shape = _const_value(graph, f"{node.name}_shape", np.array(target, np.int64))
            node.op, node.attrs = "Reshape", {}
            node.set_inputs([node.input(0), shape])
            changed = True
        return changed


def _reshape_target(node: Node) -> list[int] | None:
    x, out, p = node.input(0), node.outputs[0], perm_of(node)
    if x is None or x.shape is None or out.shape is None or p is None or is_identity(p):
        return None
    moved = [a for a in p if x.shape[a] != 1]
    if moved != sorted(moved) or any(d == 0 for d in out.shape):
        return None
    target: list[int] = []
    for j, d in enumerate(out.shape):
        if isinstance(d, int):
            target.append(d)
        elif p[j] == j:
            target.append(0)  # copy the input's dim (allowzero=0)
        elif -1 not in target:
            target.append(-1)
        else:
            return None
    return target


# -- push ----------------------------------------------------------------------------------
@dataclass
class Rewrite:
    """How a node changes when the transposes on its data inputs move below it.

    ``data``: inputs that become ``Transpose(input, inverse(p))`` (the pushed
    transposes' inputs, folded constants or new transposes); ``broadcast``:
    whether lower-rank data inputs broadcast from the right (elementwise ops);
    ``attrs``: attribute updates; ``consts``: replacement constant inputs;
    ``out_perms``: the perm of the transpose each output gets (None: none).
    """

    data: tuple[int, ...]
    out_perms: tuple[Perm | None, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    consts: dict[int, np.ndarray] = field(default_factory=dict)
    broadcast: bool = False


RuleFn = Callable[[Node, Perm, "str | None"], "Rewrite | None"]


def _one_output(node: Node, p: Perm, data: tuple[int, ...] = (0,), **kw: Any) -> Rewrite:
    return Rewrite(data, (list(p),), **kw)


def _elementwise(node: Node, p: Perm, layout: str | None) -> Rewrite | None:
    if len(node.outputs) != 1:
        return None
    data = (0,) if node.op == "Clip" else tuple(i for i, v in enumerate(node.inputs) if v)
    return _one_output(node, p, data, broadcast=True)


def _unary(node: Node, p: Perm, layout: str | None) -> Rewrite | None:
    return _one_output(node, p)


def _axis(node: Node, p: Perm, layout: str | None) -> Rewrite | None:
    axis = node.attr("axis")
    return _one_output(node, p, attrs={"axis": p[axis % len(p)]})


def _concat(node: Node, p: Perm, layout: str | None) -> Rewrite | None:
    data = tuple(i for i, v in enumerate(node.inputs) if v is not None)
    return _one_output(node, p, data, attrs={"axis": p[node.attr("axis") % len(p)]})


def _remap_axes_input(node: Node, index: int, p: Perm) -> np.ndarray | None:
    axes = _const_ints(node.input(index))
    if axes is None:
        return None
    dtype = np.asarray(node.input(index).const).dtype  # type: ignore[union-attr]
    return np.array([p[a % len(p)] for a in axes], dtype=dtype)


def _pad(node: Node, p: Perm, layout: str | None) -> Rewrite | None:
    r = len(p)
    if node.input(3) is not None:
        axes = _remap_axes_input(node, 3, p)
        return None if axes is None else _one_output(node, p, consts={3: axes})
    pads = node.input(1)
    if pads is None or pads.const is None or np.asarray(pads.const).size != 2 * r:
        return None
    arr = np.asarray(pads.const).reshape(2, r)
    inv = inverse(p)
    return _one_output(node, p, consts={1: np.ascontiguousarray(arr[:, inv].reshape(-1))})


def _slice(node: Node, p: Perm, layout: str | None) -> Rewrite | None:
    if node.input(3) is not None:
        axes = _remap_axes_input(node, 3, p)
        return None if axes is None else _one_output(node, p, consts={3: axes})
    starts = node.input(1)
    if starts is None or starts.shape is None or not isinstance(starts.shape[0], int):
        return None
    axes = np.array([p[a] for a in range(starts.shape[0])], np.int64)
    return _one_output(node, p, consts={3: axes})


def _reduce(node: Node, p: Perm, layout: str | None) -> Rewrite | None:
    r = len(p)
    axes_in = node.input(1)
    if axes_in is not None and axes_in.const is None:
        return None
    axes = _const_ints(axes_in) or []
    keep = bool(node.attr("keepdims"))
    if not axes:
        if node.attr("noop_with_empty_axes"):
            return _one_output(node, p)
        return Rewrite((0,), (list(p) if keep else None,))
    new_axes = np.array([p[a % r] for a in axes], np.asarray(axes_in.const).dtype)  # type: ignore[union-attr]
    if keep:
        return _one_output(node, p, consts={1: new_axes})
    reduced_y = {a % r for a in axes}
    kept_y = [i for i in range(r) if i not in reduced_y]
    kept_x = sorted(p[i] for i in kept_y)
    out_perm = [kept_x.index(p[i]) for i in kept_y]
    return Rewrite((0,), (out_perm,), consts={1: new_axes})


def _resize(node: Node, p: Perm, layout: str | None) -> Rewrite | None:
    r = len(p)
    inv = inverse(p)
    attrs: dict[str, Any] = {}
    consts: dict[int, np.ndarray] = {}
    axes = node.attr("axes")
    if axes:
        attrs["axes"] = [p[a % r] for a in axes]
    else:
        for index, halves in ((1, 2), (2, 1), (3, 1)):
            v = node.input(index)
            if v is None or (v.shape is not None and v.numel() == 0):
                continue
            if v.const is None or np.asarray(v.const).size != halves * r:
                return None
            arr = np.asarray(v.const).reshape(halves, r)[:, inv].reshape(-1)
            consts[index] = np.ascontiguousarray(arr)
    fmt = node.attr("format")
    if fmt in ("NCHW", "NHWC") and r >= 3:
        flipped = {"NCHW": "NHWC", "NHWC": "NCHW"}[fmt]
        if p == _layout_perm(flipped, fmt, r):
            attrs["format"] = flipped
    return Rewrite((0,), (list(p),), attrs, consts)


def _layout_perm(src: str, dst: str, rank: int) -> Perm:
    """Perm of the Transpose that turns a ``src`` tensor into a ``dst`` one."""
    if src == dst:
        return list(range(rank))
    return nchw_to_nhwc(rank) if dst == "NHWC" else nhwc_to_nchw(rank)


def _read(v: Value) -> bool:
    """Whether ``v`` is read by a node or is an output of (a graph below) its producer's graph."""
    g = v.producer.graph if v.producer is not None else None
    return bool(v.uses) or (g is not None and id(v) in _output_ids(g))


def _layout_sensitive(node: Node, p: Perm, layout: str | None) -> Rewrite | None:
    """A spatial op reading Transpose(x, layout->format) runs on x in ``layout``."""
    fmt = node.attr("format")
    if layout is None or fmt == layout or fmt not in ("NCHW", "NHWC") or len(p) < 3:
        return None
    if p != _layout_perm(layout, fmt, len(p)):
        return None
    if node.op == "FusedConv" and node.input(3) is not None:
        return None
    if node.op == "BatchNormalization" and node.attr("training_mode"):
        return None
    if any(_read(o) for o in node.outputs[1:]):  # e.g. MaxPool Indices: layout-specific
        return None
    return Rewrite((0,), (list(p), *([None] * (len(node.outputs) - 1))), {"format": layout})


PUSH_RULES: dict[str, RuleFn] = {
    "Cast": _unary,
    "Concat": _concat,
    "Pad": _pad,
    "Resize": _resize,
    "Slice": _slice,
    "Softmax": _axis,
    "LogSoftmax": _axis,
    "Hardmax": _axis,
}
"""Op -> rule; elementwise, reduction and layout-sensitive ops are found by trait."""


def push_rule(op: str) -> RuleFn | None:
    """The rule that pushes a Transpose through ``op`` (None: not pushable)."""
    if op in PUSH_RULES:
        return PUSH_RULES[op]
    if not has_op(op):
        return None
    opdef = get_op(op)
    if opdef.has(Trait.LAYOUT_SENSITIVE):
        return _layout_sensitive
    if opdef.has(Trait.REDUCTION):
        return _reduce
    if opdef.has(Trait.ELEMENTWISE) and op not in ("StringConcat", "RegexFullMatch"):
        return _elementwise
    return None


@dataclass
class _Source:
    """Where a data input comes from after the push."""

    kind: str  # "pushed" (a transpose's input), "const", "same" (all-ones), "reuse", "insert"
    value: Value
    array: np.ndarray | None = None


def _source(v: Value, p: Perm, broadcast: bool, graph: Graph) -> _Source | None:
    r = len(p)
    t = _transpose_of(v)
    if t is not None and t[1] == p:
        x = t[0].input(0)
        assert x is not None
        return _Source("pushed", x)
    if v.rank is None or v.rank > r or (v.rank < r and not broadcast):
        return None
    if v.shape is not None and all(d == 1 for d in v.shape):
        return _Source("same", v)
    if v.const is not None:
        if v.quant is not None and v.quant.axis is not None:
            return None
        full = np.asarray(v.const).reshape((1,) * (r - v.rank) + tuple(v.const.shape))
        return _Source("const", v, np.transpose(full, inverse(p)))
    if v.rank != r:
        return None
    inv = inverse(p)
    for user in v.consumers():  # an existing Transpose(v, inverse(p)) serves as it is
        if user.op == "Transpose" and user.graph is graph and perm_of(user) == inv:
            return _Source("reuse", user.outputs[0])
    return _Source("insert", v)


def _freed(node: Node, sources: dict[int, _Source]) -> list[Node]:
    """The distinct transposes whose outputs feed the pushed data inputs."""
    out: dict[int, Node] = {}
    for i, s in sources.items():
        t = _transpose_of(node.input(i)) if s.kind == "pushed" else None
        if t is not None:
            out.setdefault(id(t[0]), t[0])
    return list(out.values())


def _cancels(outputs: set[int], out: Value, q: Perm) -> bool:
    """Whether every reader of ``out`` is Transpose(inverse(q)) (so Transpose(q) cancels)."""
    users = out.consumers()
    inv = inverse(q)
    return (
        bool(users)
        and id(out) not in outputs
        and all(u.op == "Transpose" and perm_of(u) == inv for u in users)
    )


def _accept(outputs: set[int], node: Node, rw: Rewrite, sources: dict[int, _Source]) -> bool:
    """Whether the push removes at least as many transposes as it adds.

    A push that inserts transposes must remove strictly more (so pushes never
    cycle); one that only moves a transpose below the node may break even.
    """
    data_uses = {(id(node), i) for i in rw.data}
    inserted = sum(1 for s in sources.values() if s.kind == "insert")
    added, removed = inserted, 0
    for t in _freed(node, sources):
        out = t.outputs[0]
        if id(out) not in outputs and all((id(u), i) in data_uses for u, i in out.uses):
            removed += 1
    if not removed:
        return False
    for out, q in zip(node.outputs, rw.out_perms, strict=True):
        if q is None or (not out.uses and id(out) not in outputs):
            continue
        if _cancels(outputs, out, q):
            removed += len(out.consumers())
        else:
            added += 1
    return added < removed if inserted else added <= removed


def apply_rewrite(
    graph: Graph, node: Node, rw: Rewrite, inputs: dict[int, Value]
) -> list[Node | None]:
    """Rewire ``node`` to ``inputs`` (its data inputs, already in the pushed layout),
    update its attributes and constants, and give each output its transpose.

    Returns the new transpose of each output (None where ``rw.out_perms`` has none).
    """
    for i, v in inputs.items():
        node.set_input(i, v)
    for i, arr in rw.consts.items():
        old = node.input(i)
        node.set_input(i, _const_value(graph, f"{old.name if old else node.name}_t", arr))
    for name, value in rw.attrs.items():
        node.attrs[name] = value
    anchor = node
    added: list[Node | None] = []
    for k, q in enumerate(rw.out_perms):
        if q is None:
            added.append(None)
            continue
        old = node.outputs[k]
        inner = Value(
            graph.unique_name(f"{old.name}_t"), old.dtype, _permute(old.shape, inverse(q))
        )
        inner.quant = _permuted_quant(old.quant, inverse(q))
        old.producer = None
        inner.producer = node
        node.outputs = (*node.outputs[:k], inner, *node.outputs[k + 1 :])
        t = new_transpose(graph, inner, q, out=old)
        insert_node(graph, anchor, t, after=True)
        anchor = t
        added.append(t)
    return added


def _push(root: Graph, outputs: set[int], graph: Graph, node: Node, layout: str | None) -> bool:
    rule = push_rule(node.op)
    if rule is None:
        return False
    tried: list[Perm] = []
    for v in node.inputs:
        t = _transpose_of(v)
        if t is None or t[1] in tried:
            continue
        p = t[1]
        tried.append(p)
        rw = rule(node, p, layout)
        if rw is None or not any(_transpose_of(node.input(i)) == t for i in rw.data):
            continue
        sources: dict[int, _Source] = {}
        for i in rw.data:
            value = node.input(i)
            src = None if value is None else _source(value, p, rw.broadcast, graph)
            if src is None:
                break
            sources[i] = src
        else:
            if not _accept(outputs, node, rw, sources):
                continue
            _rewire(root, outputs, graph, node, p, rw, sources)
            return True
    return False


def _rewire(
    root: Graph,
    outputs: set[int],
    graph: Graph,
    node: Node,
    p: Perm,
    rw: Rewrite,
    sources: dict[int, _Source],
) -> None:
    inv = inverse(p)
    freed = _freed(node, sources)
    cancelling = [
        q is not None and _cancels(outputs, out, q)
        for out, q in zip(node.outputs, rw.out_perms, strict=True)
    ]
    inputs: dict[int, Value] = {}
    for i, s in sources.items():
        if s.kind == "const":
            assert s.array is not None
            inputs[i] = _const_value(graph, f"{s.value.name}_t", s.array)
            inputs[i].quant = s.value.quant  # per-tensor only (see _source)
        elif s.kind == "insert":
            t = new_transpose(graph, s.value, inv)
            insert_node(graph, node, t)
            inputs[i] = t.outputs[0]
        else:
            inputs[i] = s.value
    logger.debug("pushing Transpose%s below %s (%s)", p, node.name, node.op)
    added = apply_rewrite(graph, node, rw, inputs)
    if any(s.kind == "reuse" for s in sources.values()):
        graph.sort()  # a reused transpose may have come after the node
    for t in freed:
        _drop_if_dead(outputs, t)
    for t, cancel in zip(added, cancelling, strict=True):
        if t is None or not cancel:
            continue
        inner = t.input(0)
        assert inner is not None
        for user in t.outputs[0].consumers():
            assert user.graph is not None
            _bypass(root, outputs, user.graph, user, inner)
        _drop_if_dead(outputs, t)


class PushTransposes(_SweepPass):
    """Move Transposes below the ops of :func:`push_rule` when that adds none.

    ``layout`` ("NHWC" or "NCHW", or ``ctx.options["layout"]``): layout-sensitive
    ops are pushed through only when their ``format`` becomes this layout;
    without it they stop transposes.
    """

    name = "PushTransposes"

    def __init__(self, ctx: PassContext | None = None, layout: str | None = None) -> None:
        super().__init__(ctx)
        self.layout = layout or self.ctx.options.get("layout")

    def sweep(self, root: Graph, graph: Graph) -> bool:
        outputs = _output_ids(root)
        changed = False
        for node in graph:
            if node.graph is graph:
                changed |= _push(root, outputs, graph, node, self.layout)
        return changed
