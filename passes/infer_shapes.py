"""Shape and type inference over the whole graph tree.

Nodes are visited in topological order (a control-flow node's bodies before
the node itself, so that If/Loop/Scan see their bodies' output shapes). Each
node's OpDef ``infer`` result is *merged* into its output values, never
replacing what is already known:

- dtype: set only where it is UNDEFINED;
- shape: an unknown shape (None) takes the inferred one; with both known and
  of equal rank, per dimension a None takes anything, a symbolic dim (str)
  takes an int, and a known int is never changed. Conflicting ranks or ints
  keep the existing value (logged at debug).

A node whose ``infer`` raises is skipped (logged at debug): one op's inference
bug never stops a conversion.
"""

from __future__ import annotations

import logging

from ir import DataType, Dim, Graph, Node, Shape, Value, get_op, has_op
from passes.base import Pass

__all__ = ["InferShapes", "merge_shape"]

logger = logging.getLogger(__name__)


class InferShapes(Pass):
    """Fill in output dtypes and shapes from the op vocabulary's inference."""

    name = "InferShapes"

    def run(self, graph: Graph) -> bool:
        return _infer_graph(graph)


def _infer_graph(graph: Graph) -> bool:
    changed = False
    for node in graph:
        for sub in node.subgraphs():
            changed |= _infer_graph(sub)
        changed |= _infer_node(node)
    return changed


def _infer_node(node: Node) -> bool:
    if not has_op(node.op):
        return False
    infer = get_op(node.op).infer
    if infer is None:
        return False
    try:
        results = infer(node)
    except Exception as exc:  # an op's inference bug must not stop the conversion
        logger.debug("infer %s (%s) failed: %s: %s", node.name, node.op, type(exc).__name__, exc)
        return False
    changed = False
    for value, (dtype, shape) in zip(node.outputs, results, strict=False):
        changed |= _merge_into(value, DataType(dtype), shape)
    return changed


def _merge_into(value: Value, dtype: DataType, shape: Shape | None) -> bool:
    changed = False
    if value.dtype == DataType.UNDEFINED and dtype != DataType.UNDEFINED:
        value.dtype = dtype
        changed = True
    elif dtype not in (DataType.UNDEFINED, value.dtype):
        logger.debug("%s: inferred dtype %s, keeping %s", value.name, dtype.name, value.dtype.name)
    if shape is not None:
        merged = merge_shape(value.shape, tuple(shape), value.name)
        if merged != value.shape:
            value.shape = merged
            changed = True
    return changed


def merge_shape(old: Shape | None, new: Shape | None, what: str = "") -> Shape | None:
    """``old`` refined by ``new`` (see the module docstring for the rules)."""
    if new is None:
        return old
    new = tuple(_norm_dim(d) for d in new)
    if old is None:
        return new
    if len(old) != len(new):
        logger.debug("%s: inferred rank %d, keeping shape %s", what, len(new), old)
        return old
    return tuple(_merge_dim(a, b, what) for a, b in zip(old, new, strict=True))


def _norm_dim(d: object) -> Dim:
    if d is None or isinstance(d, str):
        return d
    return int(d)  # type: ignore[call-overload]


def _merge_dim(old: Dim, new: Dim, what: str) -> Dim:
    if old is None:
        return new
    if isinstance(old, int):
        if isinstance(new, int) and new != old:
            logger.debug("%s: inferred dim %d, keeping %d", what, new, old)
        return old
    return new if isinstance(new, int) else old  # symbolic: only an int refines it
