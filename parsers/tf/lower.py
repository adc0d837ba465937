"""Lowering a frozen TensorFlow GraphDef into an IR graph.

Only the nodes the outputs need are lowered, in topological order, each through the
table :data:`parsers.tf.ops.LOWERINGS` keyed by the TF op name. Placeholders become graph
inputs (named as :mod:`parsers.tf.loader` says), Const nodes constant Values; Identity,
StopGradient, NoOp and control dependencies vanish. The last IR node a lowering emits for
a TF output takes that tensor's name (``node`` for output 0, ``node:k`` after), so the
IR stays readable next to the TF graph.

Calls of library functions (PartitionedCall, StatefulPartitionedCall, a function used as
an op) are inlined. A TensorList is carried as the tensor it stacks
(:class:`parsers.tf.context.TensorList`), which is all the Keras recurrent loops need
once :mod:`parsers.tf.rnn` has turned them into IR LSTM/GRU nodes.

The whole graph is lowered before anything is reported: unknown ops and refused nodes
are collected and raised as one :class:`UnsupportedModelError`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import networkx as nx
import numpy as np

from ir import DataType, Graph, Node, Value, get_op, has_op
from parsers.errors import BadModelError, UnsupportedModelError
from parsers.tf.context import OpContext, Refused, TensorList, attr_value, tf_dtype
from parsers.tf.loader import TfModel, load_tf_model, pin_shapes, tensor_ref

__all__ = ["Builder", "FunctionBody", "Session", "lower_model", "parse_tf"]

logger = logging.getLogger(__name__)

_CALL_OPS = {"PartitionedCall", "StatefulPartitionedCall"}


def parse_tf(
    path: str | os.PathLike,
    input_shapes: Mapping[str, Sequence[int | str | None]] | None = None,
) -> Graph:
    """Read a SavedModel folder (``serving_default``) or a frozen ``.pb`` into an IR graph.

    ``input_shapes`` pins input shapes (by IR input name: the signature's input name or
    the Placeholder's node name), unknown dims included. Raises BadModelError,
    UnsupportedModelError or InputShapeError (parsers.errors).
    """
    model = load_tf_model(path)
    return lower_model(model, input_shapes)


def lower_model(
    model: TfModel, input_shapes: Mapping[str, Sequence[int | str | None]] | None = None
) -> Graph:
    shapes = pin_shapes(model, input_shapes)
    session = Session(model.source, model.graph_def.library)
    session.reserve([name for _, name in model.inputs] + [name for _, name in model.outputs])
    graph = Graph(name="main")
    builder = Builder(session, graph)
    nodes = {n.name: n for n in model.graph_def.node}
    for placeholder, name in model.inputs:
        nd = nodes.get(placeholder)
        if nd is None:
            raise BadModelError(f"{model.source}: input placeholder {placeholder!r} is missing")
        dtype = tf_dtype(nd.attr["dtype"].type) if "dtype" in nd.attr else DataType.UNDEFINED
        dims = shapes.get(name)
        shape = None if dims is None else tuple(_dim(d, name, i) for i, d in enumerate(dims))
        v = Value(name, dtype, shape)
        graph.inputs.append(v)
        builder.env[placeholder] = [v]
    builder.lower(list(model.graph_def.node), [ref for ref, _ in model.outputs])
    outputs = []
    for ref, name in model.outputs:
        outputs.append(builder.output(ref, name, outputs))
    graph.outputs = outputs
    if session.unsupported or session.problems:
        raise UnsupportedModelError.from_findings(session.unsupported, session.problems, "TF")
    graph.meta.update({"source": model.source, "format": "tensorflow", "kind": model.kind})
    return graph


def _dim(d: int | str | None, name: str, i: int) -> int | str:
    if d is None or (isinstance(d, int) and d < 0):
        return f"{name}_d{i}"
    return d


class Session:
    """Model-wide state: the function library, names in use, collected findings."""

    def __init__(self, source: str, library: Any) -> None:
        self.source = source
        self.functions: dict[str, Any] = {f.signature.name: f for f in library.function}
        self.unsupported: dict[str, str] = {}
        self.problems: list[str] = []
        self.names: set[str] = set()
        self._suffix: dict[str, int] = {}

    def reserve(self, names: Iterable[str]) -> None:
        self.names.update(names)

    def unique(self, base: str) -> str:
        name = base
        while name in self.names:
            k = self._suffix.get(base, 0) + 1
            self._suffix[base] = k
            name = f"{base}_{k}"
        self.names.add(name)
        return name


class FunctionBody:
    """A library FunctionDef with GraphDef-style inputs (``node:k`` flat output index)."""

    def __init__(self, fdef: Any, functions: Mapping[str, Any]) -> None:
        self.name: str = fdef.signature.name
        self.args: list[str] = [a.name for a in fdef.signature.input_arg]
        self.arg_types: list[DataType] = [tf_dtype(a.type) for a in fdef.signature.input_arg]
        nodes = []
        offsets = {nd.name: _output_offsets(nd, functions) for nd in fdef.node_def}
        for nd in fdef.node_def:
            copy = type(nd)()
            copy.CopyFrom(nd)
            del copy.input[:]
            copy.input.extend(_flat_ref(r, offsets) for r in nd.input)
            nodes.append(copy)
        self.nodes: list[Any] = nodes
        self.by_name: dict[str, Any] = {n.name: n for n in nodes}
        self.rets: list[str] = [
            _flat_ref(fdef.ret[a.name], offsets) for a in fdef.signature.output_arg
        ]


def _output_offsets(nd: Any, functions: Mapping[str, Any]) -> dict[str, int]:
    """Output arg name -> index of its first tensor among the node's outputs."""
    if nd.op in functions:
        args = functions[nd.op].signature.output_arg
        return {a.name: i for i, a in enumerate(args)}
    from tensorflow.python.framework import op_def_registry

    op_def = op_def_registry.get(nd.op)
    if op_def is None:
        return {}
    offsets, at = {}, 0
    for arg in op_def.output_arg:
        offsets[arg.name] = at
        if arg.number_attr:
            at += int(nd.attr[arg.number_attr].i)
        elif arg.type_list_attr:
            at += len(nd.attr[arg.type_list_attr].list.type)
        else:
            at += 1
    return offsets


def _flat_ref(ref: str, offsets: Mapping[str, Mapping[str, int]]) -> str:
    if ref.startswith("^"):
        return ref
    parts = ref.split(":")
    if len(parts) == 3:
        node, arg, idx = parts
        return f"{node}:{offsets.get(node, {}).get(arg, 0) + int(idx)}"
    return ref  # a function argument


class Builder:
    """Lowers TF nodes into one ir.Graph (the main graph or an If/Loop body)."""

    def __init__(self, session: Session, graph: Graph, parent: Builder | None = None) -> None:
        self.s = session
        self.graph = graph
        self.parent = parent
        self.env: dict[str, list[Any]] = {}
        self.failed: set[str] = set()  # TF nodes not lowered (their readers are skipped)
        self._fresh: set[int] = set()

    # -- values ---------------------------------------------------------------------
    def lookup(self, ref: str) -> Any:
        node, index = tensor_ref(ref)
        b: Builder | None = self
        while b is not None:
            outs = b.env.get(node)
            if outs is not None:
                while index >= len(outs):  # outputs of a node that failed to lower
                    outs.append(Value(self.s.unique(f"{node}:{len(outs)}")))
                return outs[index]
            b = b.parent
        raise BadModelError(f"{self.s.source}: node input {ref!r} is not defined")

    def const(self, array: np.ndarray, hint: str) -> Value:
        return Value(self.s.unique(hint), const=np.asarray(array))

    def emit(
        self,
        op: str,
        inputs: Sequence[Value | None],
        attrs: dict[str, Any] | None = None,
        n_out: int = 1,
        hint: str = "",
    ) -> list[Value]:
        name = self.s.unique(f"{hint}/{op}" if hint else op)
        outs = [Value(self.s.unique(f"{name}:{i}" if i else name)) for i in range(n_out)]
        if not has_op(op):
            raise Refused(f"IR op {op!r} is missing (lowering {hint!r})")
        node = Node(op, inputs, outs, attrs or {}, name)
        self.graph.append(node)
        infer_types(node)
        self._fresh.update(id(v) for v in outs)
        return outs

    def output(self, ref: str, name: str, taken: Sequence[Value]) -> Value:
        """The graph output for tensor ``ref``, named ``name``."""
        v = self.lookup(ref)
        if isinstance(v, TensorList):
            self.s.problems.append(f"output {name!r} is a TensorList")
            return Value(name)
        own = v.producer is not None and v.producer.graph is self.graph
        if own and all(t is not v for t in taken) and v not in self.graph.inputs:
            v.name = name
            return v
        out = Value(name, v.dtype, v.shape)
        self.graph.append(Node("Identity", [v], [out], {}, self.s.unique(f"{name}/Identity")))
        return out

    # -- nodes ------------------------------------------------------------------------
    def lower(self, nodes: Sequence[Any], fetch: Sequence[str]) -> None:
        """Lower the nodes ``fetch`` needs (skipping those already in the environment)."""
        by_name = {n.name: n for n in nodes}
        order = _needed_in_order(by_name, fetch, self)
        for name in order:
            self.lower_node(by_name[name])

    def lower_node(self, nd: Any) -> None:
        from parsers.tf.ops import LOWERINGS

        if nd.op == "Const":
            self.env[nd.name] = [self.const(attr_value(nd.attr["value"]), nd.name)]
            return
        refs = [r for r in nd.input if not r.startswith("^")]
        if any(tensor_ref(r)[0] in self.failed for r in refs):
            self._failed(nd)  # already reported upstream
            return
        inputs = [self.lookup(r) for r in refs]
        ctx = OpContext(self, nd, inputs)
        self._fresh = set()
        try:
            if nd.op in LOWERINGS:
                result = LOWERINGS[nd.op](ctx)
            elif nd.op in _CALL_OPS or nd.op in self.s.functions:
                result = self.inline_call(ctx)
            else:
                self.s.unsupported.setdefault(nd.op, nd.name)
                self._failed(nd)
                return
        except Refused as exc:
            self.s.problems.append(str(exc))
            self._failed(nd)
            return
        outs = list(result) if isinstance(result, (list, tuple)) else [result]
        for k, v in enumerate(outs):
            if isinstance(v, Value) and id(v) in self._fresh:
                v.name = self.s.unique(nd.name if k == 0 else f"{nd.name}:{k}")
                self._fresh.discard(id(v))
        self.env[nd.name] = outs

    def _failed(self, nd: Any) -> None:
        self.failed.add(nd.name)
        self.env[nd.name] = []

    def inline_call(self, ctx: OpContext) -> list[Any]:
        fname = ctx.attr("f") if ctx.op in _CALL_OPS else ctx.op
        return self.call_function(fname, ctx.inputs)

    def call_function(self, fname: str, args: Sequence[Any]) -> list[Any]:
        """Lower library function ``fname`` into this graph with ``args`` bound."""
        body = self.function(fname)
        if len(args) != len(body.args):
            raise Refused(f"call of {fname!r} passes {len(args)} of {len(body.args)} arguments")
        inner = Builder(self.s, self.graph, self)
        inner.env.update({a: [v] for a, v in zip(body.args, args, strict=True)})
        inner.lower(body.nodes, body.rets)
        return [inner.lookup(r) for r in body.rets]

    def function(self, fname: str) -> FunctionBody:
        fdef = self.s.functions.get(fname)
        if fdef is None:
            raise Refused(f"function {fname!r} is not in the graph's library")
        return FunctionBody(fdef, self.s.functions)


def _needed_in_order(by_name: Mapping[str, Any], fetch: Sequence[str], b: Builder) -> list[str]:
    """Names of the nodes ``fetch`` reads (transitively), dependencies first."""
    dg = nx.DiGraph()
    todo = [tensor_ref(r)[0] for r in fetch]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or name in b.env or name not in by_name:
            continue
        seen.add(name)
        dg.add_node(name)
        for ref in by_name[name].input:
            if ref.startswith("^"):
                continue
            src = tensor_ref(ref)[0]
            if src in by_name and src not in b.env:
                dg.add_edge(src, name)
                todo.append(src)
    try:
        return list(nx.lexicographical_topological_sort(dg))
    except nx.NetworkXUnfeasible:
        raise BadModelError(f"{b.s.source}: the graph has a cycle outside control flow") from None


def infer_types(node: Node) -> None:
    """Fill dtype/shape of a new node's outputs from the op's shape inference."""
    infer = get_op(node.op).infer
    if infer is None:
        return
    try:
        results = infer(node)
    except Exception as exc:  # noqa: BLE001 - inference is best effort at parse time
        logger.debug("type inference of %s failed: %s", node, exc)
        return
    for v, (dtype, shape) in zip(node.outputs, results, strict=False):
        if v.dtype == DataType.UNDEFINED:
            v.dtype = DataType(dtype)
        if v.shape is None and shape is not None:
            v.shape = tuple(shape)
