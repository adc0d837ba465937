"""Parallel MatMuls on one input (the Q/K/V projections) -> one MatMul and a Split.

MatMul / MatMulAct nodes of one graph that read the same input ``x`` as ``A``
with constant 2-D weights ``W_i`` ``[K, N_i]`` (same K and dtype as ``x``),
constant or omitted biases ``b_i`` ``[N_i]`` and the same activation::

    y_i = act(x @ W_i + b_i)          i = 1..n, n >= 2

become::

    y = act(x @ concat(W_1..W_n, axis=1) + concat(b_1..b_n))      (omitted b_i: zeros)
    y_1, ..., y_n = Split(y, [N_1, ..., N_n], axis=-1)

Column blocks of a product are the products of the column blocks, and the
activation is elementwise, so the numbers are those of the separate MatMuls
(up to the summation order a BLAS picks). Two nodes replace n: this is
MindSpore Lite's fusion of parallel MatMuls into one batched multiplication,
in the form that needs neither an input broadcast nor a stacked output. The
fused node is a plain MatMul when no member has a bias or an activation.

Weights with quantization parameters are left alone. It runs after the
:mod:`passes.fusions` rules, so the projections' bias Adds are already fused.
Outputs keep their tensor names (graph outputs included).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from ir import Graph, Node, Value
from passes.base import Pass

__all__ = ["FuseParallelMatMuls", "group_key"]

logger = logging.getLogger(__name__)


def group_key(node: Node) -> tuple | None:
    """What members of one fusion group share, or None when ``node`` cannot join one."""
    if node.op not in ("MatMul", "MatMulAct"):
        return None
    x, w = node.input(0), node.input(1)
    if x is None or w is None or w.const is None or w.quant is not None or w.const.ndim != 2:
        return None
    if not x.dtype.is_float or w.dtype != x.dtype or x.rank is None or x.rank < 1:
        return None
    bias = node.input(2)
    if bias is not None and (bias.const is None or bias.const.shape != (w.const.shape[1],)
                             or bias.dtype != x.dtype):  # fmt: skip
        return None
    if len(node.outputs) != 1:
        return None
    act, params = "none", None
    if node.op == "MatMulAct":
        act, params = node.attr("activation"), node.attr("activation_params")
    return (id(x), int(w.const.shape[0]), act, tuple(params or ()))


class FuseParallelMatMuls(Pass):
    """Fuse MatMuls sharing their input and constant weights' row count (Q/K/V)."""

    name = "FuseQKV"

    def run(self, graph: Graph) -> bool:
        changed = False
        for g in list(graph.all_graphs()):
            groups: dict[tuple, list[Node]] = {}
            for node in g:
                key = group_key(node)
                if key is not None:
                    groups.setdefault(key, []).append(node)
            for members in groups.values():
                if len(members) >= 2:
                    _fuse(g, graph, members)
                    changed = True
        return changed


def _fuse(graph: Graph, top: Graph, members: Sequence[Node]) -> None:
    first = members[0]
    x = first.input(0)
    assert x is not None
    key = group_key(first)
    assert key is not None
    _, _, act, params = key
    weights = [n.input(1).const for n in members]  # type: ignore[union-attr]
    sizes = [int(w.shape[1]) for w in weights]
    base = top.unique_name(f"{first.name}_qkv")
    ins: list[Value | None] = [x, _const(top, f"{base}_W", np.concatenate(weights, axis=1))]
    if any(n.input(2) is not None for n in members):
        biases = [
            np.zeros(s, weights[0].dtype) if n.input(2) is None else n.input(2).const
            for n, s in zip(members, sizes, strict=True)
        ]  # type: ignore[union-attr]
        ins.append(_const(top, f"{base}_bias", np.concatenate(biases)))
    attrs: dict = {}
    if act != "none":
        attrs = {"activation": act, "activation_params": list(params) or None}
    op = "MatMulAct" if len(ins) == 3 or attrs else "MatMul"
    old = [n.outputs[0] for n in members]
    fused = Value(top.unique_name(f"{base}_out"), x.dtype, _fused_shape(old[0], sum(sizes)))
    mm = Node(op, ins, [fused], attrs=attrs, name=base)
    outs = [Value(top.unique_name(f"{base}_{i}"), v.dtype, v.shape) for i, v in enumerate(old)]
    split_ins: list[Value | None] = [fused]
    split_attrs: dict = {"axis": -1}
    if len(set(sizes)) == 1:
        split_attrs["num_outputs"] = len(sizes)
    else:
        split_ins.append(_const(top, f"{base}_sizes", np.asarray(sizes, np.int64)))
    split = Node("Split", split_ins, outs, attrs=split_attrs, name=top.unique_name(f"{base}_split"))
    graph.insert_before(first, [mm, split])
    for v, new in zip(old, outs, strict=True):
        v.replace_all_uses_with(new, top)
    graph.remove(list(members))
    for v, new in zip(old, outs, strict=True):
        new.name = v.name
    logger.debug("fused %d MatMuls reading %s", len(members), x.name)


def _const(top: Graph, name: str, array: np.ndarray) -> Value:
    return Value(top.unique_name(name), const=np.ascontiguousarray(array))


def _fused_shape(out: Value, n: int) -> tuple | None:
    if out.shape is None or not out.shape:
        return None
    return (*out.shape[:-1], n)
