"""Common-subexpression elimination and constant deduplication.

Constants: two constants with the same dtype, shape and bytes (and no
quantization parameters) are one; readers of the later are pointed at the
first. Trainable constants (``passes.freeze``) are never merged: two equal
zero-initialized biases train apart. Arrays are bucketed by a key holding
their bytes (small arrays) or a BLAKE2 digest (large ones), so equal arrays
are found without comparing arrays pairwise; large arrays are first grouped
by dtype, shape and a strided sample of their bytes, and only those sharing a
group with another are digested (a model's distinct weights never are).

Nodes: within one graph (never across a body boundary), two nodes with the
same op, the same input values (by identity; order-free for COMMUTATIVE
ops), equal attributes after applying defaults (lists and arrays compared by
content, graphs by identity, FLOAT attributes as float32) and the same number
of outputs compute the same thing, unless the op is RANDOM (Dropout in
training mode counts as RANDOM). The later node is removed and its readers
read the earlier node's outputs.
Graph outputs keep their names: two graph outputs are never merged into one
value, and when only the later output is a graph output the earlier value
takes its name.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Hashable
from typing import Any

import numpy as np

from ir import AttrType, Graph, Node, OpDef, Trait, Value, get_op, has_op
from passes.base import Pass
from passes.fold import is_random
from passes.freeze import is_trainable

__all__ = ["EliminateCommonSubexpressions"]

logger = logging.getLogger(__name__)

_INLINE_BYTES = 256  # arrays up to this size are keyed by their bytes, larger by a digest


class EliminateCommonSubexpressions(Pass):
    """Merge duplicate constants and duplicate nodes."""

    name = "EliminateCommonSubexpressions"

    def run(self, graph: Graph) -> bool:
        changed = _dedupe_constants(graph)
        outputs = {id(v) for g in graph.all_graphs() for v in g.outputs}
        for g in list(graph.all_graphs()):
            changed |= _merge_nodes(g, outputs)
        return changed


# -- constants -----------------------------------------------------------------


def array_key(arr: np.ndarray) -> Hashable:
    """A hashable key equal for arrays of equal dtype, shape and contents (bytes)."""
    if arr.dtype == object or arr.dtype.kind in "US":
        return (str(arr.dtype), arr.shape, tuple(arr.reshape(-1).tolist()))
    data = np.require(arr, requirements="C")
    if data.nbytes <= _INLINE_BYTES:
        payload: bytes = data.tobytes()
    else:
        payload = hashlib.blake2b(data.reshape(-1).view(np.uint8), digest_size=20).digest()
    return (str(data.dtype), data.shape, payload)


def _coarse_key(arr: np.ndarray) -> Hashable:
    """Equal for equal arrays; cheap for large ones (a strided sample of the bytes)."""
    if arr.dtype == object or arr.dtype.kind in "US" or arr.nbytes <= _INLINE_BYTES:
        return array_key(arr)
    flat = arr.reshape(-1)
    step = max(1, flat.size // 64)
    return (str(arr.dtype), arr.shape, flat[::step].tobytes(), flat[-1:].tobytes())


def _candidates(graph: Graph) -> list[Value]:
    """Constants that may equal another (same coarse key), in graph order."""
    consts = [c for c in _constants(graph) if c.quant is None and not is_trainable(c)]
    keys = [_coarse_key(c.const) for c in consts]  # type: ignore[arg-type]
    seen: dict[Hashable, int] = {}
    for k in keys:
        seen[k] = seen.get(k, 0) + 1
    return [c for c, k in zip(consts, keys, strict=True) if seen[k] > 1]


def _dedupe_constants(graph: Graph) -> bool:
    outputs = {id(v) for g in graph.all_graphs() for v in g.outputs}
    first: dict[Hashable, Value] = {}
    changed = False
    for const in _candidates(graph):
        key = array_key(const.const)  # type: ignore[arg-type]
        kept = first.setdefault(key, const)
        if kept is const:
            continue
        if id(kept) not in outputs and id(const) in outputs:
            first[key] = const  # keep the graph-output constant, fold the earlier into it
            kept, const = const, kept
        if const.uses:
            logger.debug("constant %s duplicates %s", const.name, kept.name)
            const.replace_all_uses_with(kept)
            changed = True
    return changed


def _constants(graph: Graph) -> list[Value]:
    seen: dict[int, Value] = {}
    for g in graph.all_graphs():
        for v in g.values():
            if v.is_const:
                seen.setdefault(id(v), v)
    return list(seen.values())


# -- nodes ---------------------------------------------------------------------


def _merge_nodes(graph: Graph, outputs: set[int]) -> bool:
    seen: dict[Hashable, Node] = {}
    merged: list[Node] = []
    is_out = {id(v) for v in graph.outputs}
    for node in graph:
        key = _node_key(node)
        if key is None:
            continue
        kept = seen.setdefault(key, node)
        if kept is not node and _merge(graph, kept, node, outputs, is_out):
            merged.append(node)
    if merged:
        graph.remove(merged)
    return bool(merged)


def _node_key(node: Node) -> Hashable | None:
    if not has_op(node.op):
        return None
    opdef = get_op(node.op)
    if is_random(node):
        return None
    ins = [None if v is None else id(v) for v in node.inputs]
    if opdef.has(Trait.COMMUTATIVE) and len(ins) == 2 and None not in ins:
        ins.sort()  # type: ignore[call-overload]
    attrs = {k: a.default for k, a in opdef.attrs.items() if not a.required}
    attrs.update(node.attrs)
    try:
        attr_key = tuple(
            sorted((k, _attr_key(_as_declared(opdef, k, v))) for k, v in attrs.items())
        )
        hash(attr_key)
    except TypeError:
        return None
    return (node.op, tuple(ins), attr_key, len(node.outputs))


def _as_declared(opdef: OpDef, name: str, value: Any) -> Any:
    """FLOAT(S) attributes are float32 (ONNX): 0.01 and float32(0.01) are one value."""
    spec = opdef.attrs.get(name)
    if spec is None or value is None:
        return value
    if spec.type == AttrType.FLOAT:
        return float(np.float32(value))
    if spec.type == AttrType.FLOATS:
        return [float(np.float32(v)) for v in value]
    return value


def _attr_key(value: Any) -> Hashable:
    if isinstance(value, Graph):
        return ("graph", id(value))
    if isinstance(value, np.ndarray):
        return ("array", array_key(value))
    if isinstance(value, (list, tuple)):
        return ("seq", tuple(_attr_key(v) for v in value))
    if isinstance(value, float) and value != value:
        return ("nan",)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _merge(graph: Graph, kept: Node, dup: Node, outputs: set[int], is_out: set[int]) -> bool:
    """Point ``dup``'s readers at ``kept``'s outputs; ``dup`` then reads nothing.

    ``outputs``: ids of output values of every graph in the tree; ``is_out``: of
    ``graph`` itself (both kept up to date).
    """
    pairs = list(zip(kept.outputs, dup.outputs, strict=True))
    if any(id(a) in is_out and id(b) in is_out for a, b in pairs):
        return False  # two graph outputs stay two values
    logger.debug("%s duplicates %s", dup.name, kept.name)
    for a, b in pairs:
        name = b.name if id(b) in is_out else None
        if id(b) in outputs:  # an output slot of this graph or of a body
            b.replace_all_uses_with(a, graph)
            outputs.add(id(a))
        else:
            b.replace_all_uses_with(a)
        if name is not None:
            a.name = name
            is_out.add(id(a))
    dup.detach_inputs()
    return True
