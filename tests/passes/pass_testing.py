"""Helpers for pass tests: a tiny graph builder and a before/after checker.

``check_pass`` runs the executor on the graph before and after a pass on the
same random inputs and compares, asserts ``modified``, the remaining op types,
``ir.verify.check_graph`` and idempotence (a second run changes nothing).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from converter.executor.runtime import Runtime
from ir import DataType, Graph, Node, Value, get_op, has_op
from ir.verify import check_graph
from passes.base import Pass, PassResult
from passes.infer_shapes import merge_shape

F32 = DataType.FLOAT
I64 = DataType.INT64


def needs_ops(*names: str) -> list[str]:
    """The ops of ``names`` missing from the vocabulary (for skip reasons)."""
    return [n for n in names if not has_op(n)]


class Builder:
    """Builds a graph node by node; outputs get inferred dtype/shape when ``infer``."""

    def __init__(self, name: str = "main", infer: bool = True) -> None:
        self.graph = Graph(name)
        self.infer = infer
        self._count = 0

    def _name(self, base: str) -> str:
        self._count += 1
        return f"{base}{self._count}"

    def input(self, name: str, shape: tuple, dtype: DataType = F32) -> Value:
        v = Value(name, dtype, shape)
        self.graph.inputs.append(v)
        return v

    def const(self, array: Any, name: str | None = None, dtype: Any = None) -> Value:
        arr = np.asarray(array, dtype=dtype)
        return Value(name or self._name("c"), const=arr)

    def op(self, op: str, *inputs: Value | None, outputs: int = 1, **attrs: Any) -> Any:
        """Append ``op``; returns its output Value (or a tuple for several outputs)."""
        outs = [Value(self._name(op.lower() + "_")) for _ in range(outputs)]
        node = Node(op, list(inputs), outs, attrs=attrs, name=self._name(op))
        self.graph.append(node)
        if self.infer:
            infer_node(node)
        return outs[0] if outputs == 1 else tuple(outs)

    def outputs(self, *values: Value) -> Graph:
        self.graph.outputs.extend(values)
        return self.graph


def infer_node(node: Node) -> None:
    fn = get_op(node.op).infer
    if fn is None:
        return
    for v, (dtype, shape) in zip(node.outputs, fn(node), strict=False):
        if v.dtype == DataType.UNDEFINED:
            v.dtype = DataType(dtype)
        v.shape = merge_shape(v.shape, shape)


def random_feeds(graph: Graph, seed: int = 0, sizes: Mapping[str, int] | None = None) -> dict:
    """Random arrays for every graph input (symbolic dims take ``sizes`` or 2)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for v in graph.inputs:
        shape = tuple(d if isinstance(d, int) else (sizes or {}).get(str(d), 2) for d in v.shape)
        dtype = v.dtype.numpy
        if np.issubdtype(dtype, np.floating):
            feeds[v.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[v.name] = rng.random(shape) > 0.5
        else:
            feeds[v.name] = rng.integers(-5, 6, shape).astype(dtype)
    return feeds


def op_types(graph: Graph) -> list[str]:
    return sorted(n.op for n in graph.all_nodes())


def check_pass(
    graph: Graph,
    p: Pass,
    *,
    modified: bool,
    ops: Iterable[str] | None = None,
    feeds: Mapping[str, np.ndarray] | None = None,
    rtol: float = 1e-6,
    atol: float = 1e-6,
) -> PassResult:
    """Run ``p`` on ``graph`` and check modified/ops/numerics/validity/idempotence."""
    check_graph(graph)
    feeds = dict(feeds) if feeds is not None else random_feeds(graph)
    before = Runtime(graph).run(feeds)
    names_before = [v.name for v in graph.outputs]
    result = p(graph)
    assert result.modified is modified, f"{p.name}: modified={result.modified}"
    check_graph(graph)
    if ops is not None:
        assert Counter(op_types(graph)) == Counter(ops), op_types(graph)
    assert [v.name for v in graph.outputs] == names_before, "graph output names changed"
    after = Runtime(graph).run(feeds)
    assert list(after) == list(before)
    for name, want in before.items():
        got = after[name]
        assert got.dtype == want.dtype, (name, got.dtype, want.dtype)
        assert got.shape == want.shape, (name, got.shape, want.shape)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=name)
    again = p(graph)
    assert again.modified is False, f"{p.name} is not idempotent"
    check_graph(graph)
    return result
