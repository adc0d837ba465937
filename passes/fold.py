"""Constant folding with the executor's kernels.

A node is folded when every input is a constant (or omitted) and its op is
neither RANDOM nor CONTROL_FLOW; SHAPE_ONLY ops (Shape, Size) fold as soon as
their input's shape is static, constant or not, so Shape -> Gather -> Concat ->
Reshape chains collapse once shapes are known. The node's outputs turn into
constants in place: the same Value objects (names, uses, graph-output slots)
now carry the computed arrays and the node is removed.

The numbers come from ``converter.executor.kernels.KERNELS`` (one numerics
source); a kernel raising (UnsupportedKernel or anything else) leaves the node
alone, logged at debug.

``Gather`` / ``Slice`` of a ``Shape`` with constant indices fold too when
every dim they pick is static, though other dims are not (``Shape(x)[1]`` with
``x`` of shape ``[N, 12, 64]`` is 12): the kernel runs on the positions
``0..rank-1`` to learn which dims it picks.

Trainable constants (``passes.freeze``) are never folded into new ones: a
node reading one stays a node (SHAPE_ONLY ops still fold, shapes do not train).

Folding never bloats the model. With ``out`` the bytes of the results and
``freed`` the bytes of constant inputs read by this node only (they disappear
with it), a node folds when ``out <= limit`` or ``out <= freed``; ``limit`` is
``ctx.options["fold_size_limit"]`` when set, else ``ctx.fold_size_limit``.
So Expand / Tile / ConstantOfShape / Range stay nodes unless tiny, while a
Transpose or Cast of a weight read by nothing else folds at any size. Results
are sized from inferred static shapes before evaluating when possible, so an
oversized result is never even computed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from converter.executor.kernels import KERNELS
from converter.executor.registry import KernelContext
from ir import DataType, Graph, Node, Trait, Value, get_op, has_op
from passes.base import Pass
from passes.freeze import is_trainable

__all__ = ["FoldConstants", "is_random"]

logger = logging.getLogger(__name__)


class FoldConstants(Pass):
    """Evaluate nodes with constant inputs and replace them by constants."""

    name = "FoldConstants"

    @property
    def limit(self) -> int:
        return int(self.ctx.options.get("fold_size_limit", self.ctx.fold_size_limit))

    def run(self, graph: Graph) -> bool:
        changed = False
        for g in list(graph.all_graphs()):
            folded = [node for node in g if self._try_fold(node)]
            if folded:  # one removal per graph: folding thousands of nodes stays linear
                g.remove(folded, safe=False)
                changed = True
        return changed

    def _try_fold(self, node: Node) -> bool:
        args = _foldable_inputs(node)
        if args is None:
            picked = _picked_static_dims(node)
            if picked is None:
                return False
            _replace_with_constants(node, [picked], [])
            return True
        freed = _freed_bytes(node)
        estimate = _static_output_bytes(node)
        if estimate is not None and estimate > max(self.limit, freed):
            logger.debug("fold %s (%s): %d bytes out, too large", node.name, node.op, estimate)
            return False
        results = _evaluate(node, args)
        if results is None:
            return False
        size = sum(r.nbytes for r in results)
        if size > max(self.limit, freed):
            logger.debug("fold %s (%s): %d bytes out, too large", node.name, node.op, size)
            return False
        _replace_with_constants(node, results, args)
        return True


def _foldable_inputs(node: Node) -> list[np.ndarray | None] | None:
    """Kernel arguments when ``node`` can fold, else None."""
    if not has_op(node.op) or node.op not in KERNELS or node.subgraphs():
        return None
    opdef = get_op(node.op)
    if opdef.has(Trait.CONTROL_FLOW) or is_random(node):
        return None
    shape_only = opdef.has(Trait.SHAPE_ONLY)
    args: list[np.ndarray | None] = []
    for v in node.inputs:
        if v is None:
            args.append(None)
        elif is_trainable(v) and not shape_only:
            logger.debug("fold %s (%s) skipped: %s is trainable", node.name, node.op, v.name)
            return None
        elif v.const is not None:
            args.append(v.const)
        elif shape_only and v.is_static:
            args.append(_shape_stand_in(v))
        else:
            return None
    return args


def _picked_static_dims(node: Node) -> np.ndarray | None:
    """Gather/Slice of Shape(x) picking only static dims of x: those dims, else None."""
    if node.op not in ("Gather", "Slice") or node.op not in KERNELS:
        return None
    src = node.input(0)
    shape_node = None if src is None else src.producer
    if shape_node is None or shape_node.op != "Shape" or shape_node.outputs[0] is not src:
        return None
    x = shape_node.input(0)
    if x is None or x.shape is None:
        return None
    end = shape_node.attr("end")
    dims = list(x.shape)[int(shape_node.attr("start")) : None if end is None else int(end)]
    rest = node.inputs[1:]
    if any(v is not None and v.const is None for v in rest):
        return None
    probe = np.arange(len(dims), dtype=np.int64)
    results = _evaluate(node, [probe, *(None if v is None else v.const for v in rest)])
    if results is None:
        return None
    picked = [dims[int(i)] for i in results[0].reshape(-1)]
    if not all(isinstance(d, (int, np.integer)) for d in picked):
        return None
    return np.array(picked, np.int64).reshape(results[0].shape)


def is_random(node: Node) -> bool:
    """RANDOM ops, and Dropout unless training_mode is omitted or a constant false."""
    if has_op(node.op) and get_op(node.op).has(Trait.RANDOM):
        return True
    if node.op == "Dropout":
        training = node.input(2)
        return training is not None and (training.const is None or bool(training.const.any()))
    return False


def _shape_stand_in(v: Value) -> np.ndarray:
    """A zero-memory array with ``v``'s shape and dtype (for SHAPE_ONLY kernels)."""
    try:
        dtype = v.dtype.numpy if v.dtype != DataType.UNDEFINED else np.dtype(np.float32)
    except TypeError:
        dtype = np.dtype(np.float32)
    return np.broadcast_to(np.zeros((), dtype=dtype), v.shape)  # type: ignore[arg-type]


def _freed_bytes(node: Node) -> int:
    """Bytes of the constants that only ``node`` reads (gone once it folds)."""
    freed = 0
    seen: set[int] = set()
    for v in node.inputs:
        if v is None or v.const is None or id(v) in seen:
            continue
        seen.add(id(v))
        if all(user is node for user, _ in v.uses) and not _is_graph_output(v, node.graph):
            freed += v.const.nbytes
    return freed


def _is_graph_output(v: Value, graph: Graph | None) -> bool:
    return graph is not None and any(o is v for o in graph.outputs)


def _static_output_bytes(node: Node) -> int | None:
    total = 0
    for out in node.outputs:
        if not out.is_static or out.dtype in (DataType.UNDEFINED, DataType.STRING):
            return None
        try:
            total += int(out.numel() or 0) * out.dtype.itemsize
        except TypeError:
            return None
    return total


def _evaluate(node: Node, args: Sequence[np.ndarray | None]) -> list[np.ndarray] | None:
    try:
        raw = KERNELS[node.op](KernelContext(node, None), *args)
    except Exception as exc:  # UnsupportedKernel or a kernel failing on this case
        logger.debug("fold %s (%s) skipped: %s: %s", node.name, node.op, type(exc).__name__, exc)
        return None
    results = list(raw) if isinstance(raw, (tuple, list)) else [raw]
    if len(results) != len(node.outputs):
        logger.debug(
            "fold %s (%s): %d results for %d outputs",
            node.name,
            node.op,
            len(results),
            len(node.outputs),
        )
        return None
    arrays = [np.asarray(r) for r in results]
    for out, arr in zip(node.outputs, arrays, strict=True):
        try:
            got = DataType.from_numpy(arr.dtype)
        except TypeError:
            return None
        if out.dtype not in (DataType.UNDEFINED, got):
            logger.debug(
                "fold %s (%s): kernel gave %s for %s output %s",
                node.name,
                node.op,
                got.name,
                out.dtype.name,
                out.name,
            )
            return None
    return arrays


def _own(arr: np.ndarray, args: Sequence[np.ndarray | None]) -> np.ndarray:
    """``arr`` itself when it is an input constant, else a compact array of its own."""
    if any(arr is a for a in args):
        return arr
    if arr.base is not None or not arr.flags.c_contiguous:
        return np.require(arr, requirements="C").copy()
    return arr


def _replace_with_constants(
    node: Node, results: list[np.ndarray], args: Sequence[np.ndarray | None]
) -> None:
    logger.debug("folded %s (%s)", node.name, node.op)
    node.detach_inputs()  # the caller drops the node from its graph
    for out, arr in zip(node.outputs, results, strict=True):
        arr = _own(arr, args)
        out.producer = None
        out.const = arr
        out.dtype = DataType.from_numpy(arr.dtype)
        out.shape = tuple(int(d) for d in arr.shape)
