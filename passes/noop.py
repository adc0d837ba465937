"""Removal of nodes that compute the identity.

Each rule below looks at one op (by name and attributes, ONNX semantics) and
returns the input value the node's output provably equals, or None:

- Identity; Dropout in inference (training_mode omitted or constant false,
  mask output unused);
- Cast/CastLike to the input's own dtype;
- Reshape to the input's shape (target dims equal, 0 copying when allowzero=0,
  or a single -1 once all other dims matched); Expand whose shape broadcasts
  to the input's own shape;
- Transpose with the identity permutation; Squeeze/Unsqueeze with empty
  constant axes (Squeeze with no axes when no dim can be 1);
- Slice covering every sliced axis fully with step 1; Pad with all-zero pads;
- Concat/Sum/Max/Min/Mean of a single input;
- Add/Sub of a constant zero, Mul/Div by a constant one, when the constant
  has the other input's dtype and broadcasts without growing its shape.

The output's readers then read that input. Graph-output names survive: when
the output is a graph output, the input is renamed to the output's name if it
is produced by a node of the same graph and is not itself an output of any
graph; otherwise the
node stays (turned into an Identity).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from ir import DataType, Dim, Graph, Node, Value, has_op
from passes.base import Pass

__all__ = ["RemoveNoOps", "NO_OP_RULES"]

logger = logging.getLogger(__name__)

_BIG = 2**31 - 1  # Slice ends at or above this mean "to the end" (INT_MAX/INT64_MAX idioms)

Rule = Callable[[Node], "Value | None"]


class RemoveNoOps(Pass):
    """Bypass and remove nodes that compute the identity."""

    name = "RemoveNoOps"

    def run(self, graph: Graph) -> bool:
        outputs = {id(v) for g in graph.all_graphs() for v in g.outputs}
        changed = False
        for g in list(graph.all_graphs()):
            bypassed: list[Node] = []
            for node in g:
                rule = NO_OP_RULES.get(node.op)
                if rule is None or not has_op(node.op):
                    continue
                src = rule(node)
                if src is not None:
                    changed |= _bypass(g, node, src, outputs, bypassed)
            if bypassed:
                g.remove(bypassed)
        return changed


def _bypass(graph: Graph, node: Node, src: Value, outputs: set[int], bypassed: list[Node]) -> bool:
    """Readers of the node's output read ``src``; the node joins ``bypassed``."""
    out = node.outputs[0]
    if any(o is out for o in graph.outputs):
        renamable = src.producer is not None and src.producer.graph is graph
        renamable = renamable and id(src) not in outputs
        if not renamable:
            return _to_identity(node, src)
        src.name = out.name
    logger.debug("bypassing no-op %s (%s)", node.name, node.op)
    if id(out) in outputs:  # an output slot of this graph or of a body below it
        out.replace_all_uses_with(src, graph)
        outputs.add(id(src))
    else:
        out.replace_all_uses_with(src)
    node.detach_inputs()
    bypassed.append(node)
    return True


def _to_identity(node: Node, src: Value) -> bool:
    if node.op == "Identity":
        return False
    logger.debug("no-op %s (%s) feeds a graph output: now an Identity", node.name, node.op)
    node.op = "Identity"
    node.attrs = {}
    node.set_inputs([src])
    for extra in node.outputs[1:]:  # an unused Dropout mask
        extra.producer = None
    node.outputs = node.outputs[:1]
    return True


# -- helpers -------------------------------------------------------------------


def _const_ints(v: Value | None) -> list[int] | None:
    if v is None or v.const is None:
        return None
    return [int(x) for x in np.asarray(v.const).reshape(-1)]


def _unused(v: Value, graph: Graph | None) -> bool:
    return not v.uses and not (graph is not None and any(o is v for o in graph.outputs))


def _dims_equal(a: Dim, b: Dim) -> bool:
    """True when two dims are provably equal (same int or same symbol)."""
    return a is not None and a == b


# -- rules ---------------------------------------------------------------------


def _identity(node: Node) -> Value | None:
    return node.input(0)


def _dropout(node: Node) -> Value | None:
    training = node.input(2)
    if training is not None and (training.const is None or bool(np.any(training.const))):
        return None
    if any(not _unused(o, node.graph) for o in node.outputs[1:]):
        return None
    return node.input(0)


def _cast(node: Node) -> Value | None:
    x = node.input(0)
    if x is None or x.dtype == DataType.UNDEFINED:
        return None
    return x if int(node.attr("to")) == int(x.dtype) else None


def _cast_like(node: Node) -> Value | None:
    x, like = node.input(0), node.input(1)
    if x is None or like is None or x.dtype == DataType.UNDEFINED:
        return None
    return x if x.dtype == like.dtype else None


def _reshape(node: Node) -> Value | None:
    x, target = node.input(0), _const_ints(node.input(1))
    if x is None or x.shape is None or target is None or len(target) != len(x.shape):
        return None
    copy_zero = not node.attr("allowzero")
    open_dims = 0
    for t, d in zip(target, x.shape, strict=True):
        if t == -1:
            open_dims += 1
        elif not ((t == 0 and copy_zero) or (isinstance(d, int) and t == d)):
            return None
    return x if open_dims <= 1 else None


def _expand(node: Node) -> Value | None:
    x, target = node.input(0), _const_ints(node.input(1))
    if x is None or x.shape is None or target is None or len(target) > len(x.shape):
        return None
    tail = x.shape[len(x.shape) - len(target) :]
    ok = all(t == 1 or (isinstance(d, int) and t == d) for t, d in zip(target, tail, strict=True))
    return x if ok else None


def _transpose(node: Node) -> Value | None:
    x, perm = node.input(0), node.attr("perm")
    if x is None:
        return None
    if perm is None:
        return x if x.rank is not None and x.rank <= 1 else None
    return x if list(perm) == list(range(len(perm))) else None


def _unsqueeze(node: Node) -> Value | None:
    axes = _const_ints(node.input(1))
    return node.input(0) if axes == [] else None


def _squeeze(node: Node) -> Value | None:
    x = node.input(0)
    axes = _const_ints(node.input(1)) if node.input(1) is not None else []
    if x is None or axes is None or axes:
        return None
    # no axes: squeeze every dim of size 1, the identity only when none can be 1
    if not x.is_static or any(d == 1 for d in x.shape):  # type: ignore[union-attr]
        return None
    return x


def _slice(node: Node) -> Value | None:
    x = node.input(0)
    starts, ends = _const_ints(node.input(1)), _const_ints(node.input(2))
    if x is None or x.shape is None or starts is None or ends is None:
        return None
    rank = len(x.shape)
    axes = _const_ints(node.input(3)) if node.input(3) is not None else list(range(len(starts)))
    steps = _const_ints(node.input(4)) if node.input(4) is not None else [1] * len(starts)
    if axes is None or steps is None or not len(starts) == len(ends) == len(axes) == len(steps):
        return None
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        if step != 1 or not -rank <= axis < rank:
            return None
        dim = x.shape[axis]
        if not _full_range(start, end, dim):
            return None
    return x


def _full_range(start: int, end: int, dim: Dim) -> bool:
    if isinstance(dim, int):
        return (start == 0 or start <= -dim) and end >= dim
    return start == 0 and end >= _BIG


def _pad(node: Node) -> Value | None:
    pads = _const_ints(node.input(1))
    return node.input(0) if pads is not None and not any(pads) else None


def _single(node: Node) -> Value | None:
    present = [v for v in node.inputs if v is not None]
    return present[0] if len(node.inputs) == 1 and len(present) == 1 else None


def _neutral(value: float, commutative: bool) -> Rule:
    """Rule for ``x op c`` (and ``c op x`` when commutative) with c all ``value``."""

    def rule(node: Node) -> Value | None:
        a, b = node.input(0), node.input(1)
        pairs = [(a, b), (b, a)] if commutative else [(a, b)]
        for x, c in pairs:
            if x is not None and c is not None and _is_neutral_for(c, x, value):
                return x
        return None

    return rule


def _is_neutral_for(c: Value, x: Value, value: float) -> bool:
    if c.const is None or x.shape is None or x.dtype == DataType.UNDEFINED:
        return False
    if c.meta.get("trainable"):  # a zero bias / unit scale that training will change
        return False
    if c.dtype != x.dtype or c.const.ndim > len(x.shape):
        return False
    tail = x.shape[len(x.shape) - c.const.ndim :]
    if not all(n == 1 or _dims_equal(d, n) for n, d in zip(c.const.shape, tail, strict=True)):
        return False
    return bool(np.all(c.const == value))


NO_OP_RULES: dict[str, Rule] = {
    "Identity": _identity,
    "Dropout": _dropout,
    "Cast": _cast,
    "CastLike": _cast_like,
    "Reshape": _reshape,
    "Expand": _expand,
    "Transpose": _transpose,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Slice": _slice,
    "Pad": _pad,
    "Concat": _single,
    "Sum": _single,
    "Max": _single,
    "Min": _single,
    "Mean": _single,
    "Add": _neutral(0, commutative=True),
    "Sub": _neutral(0, commutative=False),
    "Mul": _neutral(1, commutative=True),
    "Div": _neutral(1, commutative=False),
}
"""Op name -> rule returning the input the node's output equals (None: not a no-op)."""
