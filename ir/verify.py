"""Structural checks of a graph against the op vocabulary.

``check_graph`` raises :class:`ir.IRError` naming the first problem: an op not
in the vocabulary, wrong arity, a missing required attribute or one of the
wrong type, a use-list out of sync, a node reading a value produced later
(topological order), or two values with one name.
"""

from __future__ import annotations

import numpy as np

from ir.core import Graph, IRError, Node, Value
from ir.ops import AttrType, get_op, has_op

__all__ = ["check_graph"]

_PY_TYPES = {
    AttrType.INT: (int, np.integer),
    AttrType.FLOAT: (float, int, np.floating),
    AttrType.STRING: (str,),
    AttrType.INTS: (list, tuple),
    AttrType.FLOATS: (list, tuple),
    AttrType.STRINGS: (list, tuple),
    AttrType.TENSOR: (np.ndarray,),
    AttrType.GRAPH: (Graph,),
    AttrType.GRAPHS: (list, tuple),
}


def check_node(node: Node) -> None:
    """Arity and attributes of one node against its OpDef."""
    if not has_op(node.op):
        raise IRError(f"node {node.name!r}: op {node.op!r} is not in the IR vocabulary")
    opdef = get_op(node.op)
    n_in = len(node.inputs)
    if n_in < opdef.min_inputs:
        # trailing optional inputs may be absent, required ones may not
        raise IRError(f"node {node.name!r} ({node.op}): {n_in} inputs, needs {opdef.min_inputs}")
    if opdef.max_inputs is not None and n_in > opdef.max_inputs:
        raise IRError(f"node {node.name!r} ({node.op}): {n_in} inputs, at most {opdef.max_inputs}")
    for i, name in enumerate(opdef.inputs):
        if not name.endswith(("?", "*")) and i < n_in and node.inputs[i] is None:
            raise IRError(f"node {node.name!r} ({node.op}): required input {name!r} is missing")
    for key, value in node.attrs.items():
        spec = opdef.attrs.get(key)
        if spec is None:
            raise IRError(f"node {node.name!r} ({node.op}): unknown attribute {key!r}")
        if value is not None and not isinstance(value, _PY_TYPES[spec.type]):
            raise IRError(
                f"node {node.name!r} ({node.op}): attribute {key!r} should be "
                f"{spec.type.value}, got {type(value).__name__}"
            )
    for key, spec in opdef.attrs.items():
        if spec.required and key not in node.attrs:
            raise IRError(f"node {node.name!r} ({node.op}): required attribute {key!r} missing")


def check_graph(graph: Graph, _outer: set[int] | None = None) -> None:
    """Raise IRError on the first structural problem in ``graph`` (and subgraphs)."""
    available: set[int] = set(_outer or ())
    available.update(id(v) for v in graph.inputs)
    names: dict[str, Value] = {}

    def name_ok(v: Value) -> None:
        other = names.setdefault(v.name, v)
        if other is not v:
            raise IRError(f"two values named {v.name!r} in graph {graph.name!r}")

    for node in graph.nodes:
        if node.graph is not graph:
            raise IRError(f"{node} is listed in {graph.name!r} but not owned by it")
        check_node(node)
        for i, v in enumerate(node.inputs):
            if v is None:
                continue
            if (node, i) not in v._uses:
                raise IRError(f"use-list of {v.name!r} misses {node.name!r} input {i}")
            if not v.is_const and id(v) not in available:
                raise IRError(
                    f"node {node.name!r} reads {v.name!r} before it is produced "
                    "(graph not in topological order, or value undefined)"
                )
            name_ok(v)
        for sub in node.subgraphs():
            check_graph(sub, available)
        for out in node.outputs:
            if out.producer is not node:
                raise IRError(f"{out.name!r} lists another producer than {node.name!r}")
            name_ok(out)
            available.add(id(out))
    for v in graph.outputs:
        if not v.is_const and id(v) not in available:
            raise IRError(f"graph output {v.name!r} is never produced")
