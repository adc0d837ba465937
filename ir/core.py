"""The graph data structure: Value, Node, Graph.

A :class:`Value` is an edge: it has one producer (a node output, a graph
input, or nothing when it is a constant) and a list of uses. A :class:`Node`
owns its outputs; its inputs are changed only through :meth:`Node.set_input`
and :meth:`Value.replace_all_uses_with`, which keep use-lists exact. A
:class:`Graph` keeps its nodes in topological order: every mutation method
either preserves that order or re-sorts.

This module is framework-free: it knows nothing about ONNX, TFLite, TF, Caffe
or FlatBuffers, and nothing about executor kernels.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np

from ir.dtypes import DataType

__all__ = ["Dim", "Graph", "IRError", "Node", "QuantParams", "Shape", "Value"]

Dim = int | str | None
"""One dimension: a size, a symbolic name (dynamic), or None (unknown)."""
Shape = tuple[Dim, ...]


class IRError(Exception):
    """An invalid graph or an invalid mutation of one."""


@dataclass
class QuantParams:
    """Affine quantization of a tensor: real = scale * (q - zero_point).

    ``axis`` is None for per-tensor parameters; otherwise scale/zero_point have
    one entry per slice along ``axis``.
    """

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None = None
    num_bits: int = 8
    min: np.ndarray | None = None
    max: np.ndarray | None = None


class Value:
    """A tensor flowing in the graph: graph input, node output or constant."""

    __slots__ = ("_uses", "const", "dtype", "meta", "name", "producer", "quant", "shape")

    def __init__(
        self,
        name: str,
        dtype: DataType = DataType.UNDEFINED,
        shape: Shape | None = None,
        const: np.ndarray | None = None,
    ) -> None:
        self.name = name
        self.producer: Node | None = None
        self._uses: list[tuple[Node, int]] = []
        self.const = const
        self.quant: QuantParams | None = None
        self.meta: dict[str, Any] = {}
        if const is not None:
            dtype = DataType.from_numpy(const.dtype)
            shape = tuple(int(d) for d in const.shape)
        self.dtype = DataType(dtype)
        self.shape: Shape | None = None if shape is None else tuple(shape)

    # -- queries -------------------------------------------------------------
    @property
    def is_const(self) -> bool:
        return self.const is not None

    @property
    def uses(self) -> tuple[tuple[Node, int], ...]:
        """(node, input index) pairs that read this value."""
        return tuple(self._uses)

    def consumers(self) -> list[Node]:
        """The distinct nodes reading this value, in first-use order."""
        seen: dict[int, Node] = {}
        for node, _ in self._uses:
            seen.setdefault(id(node), node)
        return list(seen.values())

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    @property
    def is_static(self) -> bool:
        """True when every dimension is a known integer."""
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)

    def numel(self) -> int | None:
        if not self.is_static:
            return None
        return int(np.prod(self.shape, dtype=np.int64))

    # -- mutation ------------------------------------------------------------
    def replace_all_uses_with(self, new: Value, graph: Graph | None = None) -> None:
        """Point every reader of this value at ``new``.

        With ``graph`` given, graph outputs (of that graph and its subgraphs)
        that are this value are replaced too.
        """
        if new is self:
            return
        for node, index in list(self._uses):
            node.set_input(index, new)
        if graph is not None:
            for g in graph.all_graphs():
                g.outputs = [new if v is self else v for v in g.outputs]

    def __repr__(self) -> str:
        kind = "const " if self.is_const else ""
        return f"Value({kind}{self.name!r}, {self.dtype.name}, {self.shape})"


class Node:
    """One operation: an op of the vocabulary applied to input values."""

    __slots__ = ("_inputs", "attrs", "graph", "meta", "name", "op", "outputs")

    def __init__(
        self,
        op: str,
        inputs: Sequence[Value | None],
        outputs: Sequence[Value] | int = 1,
        attrs: dict[str, Any] | None = None,
        name: str = "",
    ) -> None:
        self.op = op
        self.name = name
        self.attrs: dict[str, Any] = dict(attrs or {})
        self.graph: Graph | None = None
        self.meta: dict[str, Any] = {}
        self._inputs: list[Value | None] = []
        for value in inputs:
            self._append_input(value)
        if isinstance(outputs, int):
            outputs = [Value(f"{name or op}_out{i}") for i in range(outputs)]
        self.outputs: tuple[Value, ...] = tuple(outputs)
        for out in self.outputs:
            if out.producer is not None:
                raise IRError(f"value {out.name!r} already has a producer")
            out.producer = self

    # -- inputs --------------------------------------------------------------
    @property
    def inputs(self) -> tuple[Value | None, ...]:
        return tuple(self._inputs)

    def input(self, index: int) -> Value | None:
        """Input ``index``, or None when omitted or past the end."""
        return self._inputs[index] if index < len(self._inputs) else None

    def _append_input(self, value: Value | None) -> None:
        if value is not None:
            value._uses.append((self, len(self._inputs)))
        self._inputs.append(value)

    def set_input(self, index: int, value: Value | None) -> None:
        """Replace input ``index`` (extending with None when needed)."""
        while len(self._inputs) <= index:
            self._inputs.append(None)
        old = self._inputs[index]
        if old is not None:
            old._uses.remove((self, index))
        if value is not None:
            value._uses.append((self, index))
        self._inputs[index] = value

    def set_inputs(self, values: Sequence[Value | None]) -> None:
        """Replace all inputs at once."""
        self.detach_inputs()
        for value in values:
            self._append_input(value)

    def detach_inputs(self) -> None:
        """Drop every input (the node then reads nothing)."""
        for index, old in enumerate(self._inputs):
            if old is not None:
                old._uses.remove((self, index))
        self._inputs = []

    # -- attributes ----------------------------------------------------------
    def attr(self, name: str) -> Any:
        """Attribute ``name``, falling back to the op's declared default."""
        if name in self.attrs:
            return self.attrs[name]
        from ir.ops import get_op

        return get_op(self.op).default(name)

    def subgraphs(self) -> list[Graph]:
        out: list[Graph] = []
        for value in self.attrs.values():
            if isinstance(value, Graph):
                out.append(value)
            elif isinstance(value, list) and value and isinstance(value[0], Graph):
                out.extend(value)
        return out

    def __repr__(self) -> str:
        ins = ", ".join("-" if v is None else v.name for v in self._inputs)
        outs = ", ".join(v.name for v in self.outputs)
        return f"Node({self.op} {self.name!r}: ({ins}) -> ({outs}))"


@dataclass
class Graph:
    """Nodes in topological order, plus graph inputs and outputs.

    Subgraphs (If/Loop/Scan bodies) are Graphs held in node attributes; their
    nodes may read values of enclosing graphs directly.
    """

    name: str = "main"
    inputs: list[Value] = field(default_factory=list)
    outputs: list[Value] = field(default_factory=list)
    _nodes: list[Node] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    opset: dict[str, int] = field(default_factory=dict)

    # -- reading -------------------------------------------------------------
    @property
    def nodes(self) -> tuple[Node, ...]:
        return tuple(self._nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(list(self._nodes))

    def __len__(self) -> int:
        return len(self._nodes)

    def all_graphs(self) -> Iterator[Graph]:
        """This graph and every subgraph below it, depth first."""
        yield self
        for node in self._nodes:
            for sub in node.subgraphs():
                yield from sub.all_graphs()

    def all_nodes(self) -> Iterator[Node]:
        """Every node of this graph and of its subgraphs."""
        for g in self.all_graphs():
            yield from g._nodes

    def values(self) -> list[Value]:
        """Every value this graph (not its subgraphs) touches, each once."""
        seen: dict[int, Value] = {}
        for v in self.inputs:
            seen.setdefault(id(v), v)
        for node in self._nodes:
            for v in node.inputs:
                if v is not None:
                    seen.setdefault(id(v), v)
            for v in node.outputs:
                seen.setdefault(id(v), v)
        for v in self.outputs:
            seen.setdefault(id(v), v)
        return list(seen.values())

    def constants(self) -> list[Value]:
        return [v for v in self.values() if v.is_const]

    def count_ops(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for node in self.all_nodes():
            counts[node.op] = counts.get(node.op, 0) + 1
        return dict(sorted(counts.items()))

    # -- naming --------------------------------------------------------------
    def unique_name(self, base: str) -> str:
        """A value/node name not used anywhere in this graph tree."""
        taken = self.meta.setdefault("_names", None)
        if taken is None:
            taken = set()
            for g in self.all_graphs():
                for v in g.values():
                    taken.add(v.name)
                for n in g._nodes:
                    taken.add(n.name)
            self.meta["_names"] = taken
        if base not in taken:
            taken.add(base)
            return base
        for i in itertools.count(1):
            cand = f"{base}_{i}"
            if cand not in taken:
                taken.add(cand)
                return cand
        raise AssertionError("unreachable")

    # -- mutation ------------------------------------------------------------
    def append(self, node: Node) -> Node:
        """Add ``node`` at the end (its inputs must already be available)."""
        self._adopt(node)
        self._nodes.append(node)
        return node

    def insert_before(self, anchor: Node, nodes: Node | Iterable[Node]) -> None:
        new = [nodes] if isinstance(nodes, Node) else list(nodes)
        at = self._index(anchor)
        for n in new:
            self._adopt(n)
        self._nodes[at:at] = new

    def insert_after(self, anchor: Node, nodes: Node | Iterable[Node]) -> None:
        new = [nodes] if isinstance(nodes, Node) else list(nodes)
        at = self._index(anchor) + 1
        for n in new:
            self._adopt(n)
        self._nodes[at:at] = new

    def remove(self, nodes: Node | Iterable[Node], safe: bool = True) -> None:
        """Remove nodes; with ``safe`` their outputs must be unused.

        Atomic: when a check fails nothing is removed.
        """
        doomed = [nodes] if isinstance(nodes, Node) else list(nodes)
        ids = {id(n) for n in doomed}
        if safe:
            outs = {id(v) for v in self.outputs}
            for n in doomed:
                for out in n.outputs:
                    if id(out) in outs:
                        raise IRError(f"cannot remove {n}: {out.name!r} is a graph output")
                    for user, _ in out._uses:
                        if id(user) not in ids:
                            raise IRError(f"cannot remove {n}: {out.name!r} is read by {user}")
        for n in doomed:
            n.detach_inputs()
            n.graph = None
        self._nodes = [n for n in self._nodes if id(n) not in ids]

    def sort(self) -> None:
        """Restore topological order, keeping the current order where legal."""
        order = {id(n): i for i, n in enumerate(self._nodes)}
        dg = nx.DiGraph()
        dg.add_nodes_from(order.values())
        for n in self._nodes:
            for dep in _node_deps(n):
                if id(dep) in order:
                    dg.add_edge(order[id(dep)], order[id(n)])
        try:
            ranked = list(nx.lexicographical_topological_sort(dg))
        except nx.NetworkXUnfeasible:
            raise IRError(f"graph {self.name!r} has a cycle") from None
        self._nodes = [self._nodes[i] for i in ranked]

    def _adopt(self, node: Node) -> None:
        if node.graph is not None and node.graph is not self:
            raise IRError(f"{node} already belongs to graph {node.graph.name!r}")
        node.graph = self
        if not node.name:
            node.name = self.unique_name(node.op)
        taken = self.meta.get("_names")
        if taken is not None:  # keep the name cache current instead of rebuilding it
            taken.add(node.name)
            taken.update(v.name for v in node.outputs)

    def _index(self, node: Node) -> int:
        for i, n in enumerate(self._nodes):
            if n is node:
                return i
        raise IRError(f"{node} is not in graph {self.name!r}")


def _node_deps(node: Node) -> Iterator[Node]:
    """Producers a node needs first, including those read inside its subgraphs."""
    for v in node.inputs:
        if v is not None and v.producer is not None:
            yield v.producer
    for sub in node.subgraphs():
        for inner in sub.all_nodes():
            for v in inner.inputs:
                if v is not None and v.producer is not None:
                    yield v.producer
        for v in sub.outputs:
            if v.producer is not None:
                yield v.producer
