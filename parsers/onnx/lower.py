"""Lowering ONNX graphs into IR graphs.

Every ONNX node becomes the IR op of the same name (attributes typed by the op's
declaration, values equal to the declared default omitted) after the per-op upgrade of
:mod:`parsers.onnx.upgrades` brought old opset forms to the latest one. Constant nodes
and initializers become constant Values; value and node names are kept (unnamed or
repeated node names get unique ones). Subgraphs (If/Loop/Scan bodies) become
``ir.Graph`` attributes whose nodes resolve names in their own scope first, then in the
enclosing ones (reading outer IR Values directly).

The whole model is lowered before anything is reported: ops outside the IR vocabulary,
ops of other domains and undeclared attributes are collected and raised as one
:class:`UnsupportedModelError`.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnx.inliner
from onnx import AttributeProto as AP  # noqa: N817

from ir import AttrType, DataType, Graph, Node, Value, get_op, has_op
from parsers.errors import BadModelError, UnsupportedModelError
from parsers.onnx.contrib import CONTRIB
from parsers.onnx.loader import (
    TensorReader,
    elem_type_name,
    infer_value_types,
    load_model,
    type_info,
    unknown_elem_type,
)
from parsers.onnx.upgrades import OnnxNode, upgrade

__all__ = ["parse_onnx"]

logger = logging.getLogger(__name__)

DEFAULT_DOMAIN = "ai.onnx"


def parse_onnx(
    model: str | os.PathLike | onnx.ModelProto,
    input_shapes: Mapping[str, Sequence[int | str]] | None = None,
) -> Graph:
    """Read an ONNX model (path or proto) into an IR graph.

    ``input_shapes`` pins input shapes (dynamic dims included) before type inference.
    Raises BadModelError, UnsupportedModelError or InputShapeError (parsers.errors).
    """
    loaded = load_model(model)
    proto = loaded.proto
    if proto.functions:
        proto = _inline_functions(proto, loaded.source)
    init_names = {t.name for t in proto.graph.initializer}
    init_names |= {t.values.name for t in proto.graph.sparse_initializer}
    real_inputs = [vi.name for vi in proto.graph.input if vi.name not in init_names]
    walk = infer_value_types(proto, real_inputs, input_shapes, loaded.source)
    session = _Session(
        proto, TensorReader(loaded.base_dir, loaded.source, loaded.split), loaded.source
    )
    graph = _GraphLowering(session, walk, None, proto.graph, set(real_inputs)).run()
    if session.unsupported or session.problems:
        raise UnsupportedModelError.from_findings(session.unsupported, session.problems, "ONNX")
    graph.opset = dict(session.opset)
    graph.meta.update(_model_meta(proto, loaded.source))
    return graph


def _inline_functions(proto: onnx.ModelProto, source: str) -> onnx.ModelProto:
    try:
        return onnx.inliner.inline_local_functions(proto)
    except Exception as exc:  # noqa: BLE001 - the inliner raises assorted C++ errors
        raise BadModelError(f"{source}: cannot inline model-local functions ({exc})") from None


def _model_meta(proto: onnx.ModelProto, source: str) -> dict[str, Any]:
    return {
        "source": source,
        "format": "onnx",
        "producer": proto.producer_name,
        "producer_version": proto.producer_version,
        "ir_version": proto.ir_version,
        "model_version": proto.model_version,
        "domain": proto.domain,
        "doc_string": proto.doc_string,
        "metadata_props": {p.key: p.value for p in proto.metadata_props},
    }


class _Session:
    """Model-wide state: opsets, tensor reader, names in use, collected findings."""

    def __init__(self, proto: onnx.ModelProto, reader: TensorReader, source: str) -> None:
        self.reader = reader
        self.source = source
        self.opset = {(o.domain or DEFAULT_DOMAIN): int(o.version) for o in proto.opset_import}
        if "ai.onnx" not in self.opset:
            self.opset[DEFAULT_DOMAIN] = 1
        self.unsupported: dict[str, str] = {}
        self.problems: list[str] = []
        self.value_names: set[str] = set(_all_value_names(proto.graph))
        self.node_names: set[str] = set()
        self._next_suffix: dict[str, int] = {}

    def unique(self, base: str, taken: set[str]) -> str:
        """``base``, or ``base_<k>`` with the smallest free k tried since the last call."""
        name = base
        while name in taken:
            k = self._next_suffix.get(base, 0) + 1
            self._next_suffix[base] = k
            name = f"{base}_{k}"
        taken.add(name)
        return name

    def unsupported_op(self, domain: str, op: str, node: str) -> None:
        key = op if domain == DEFAULT_DOMAIN else f"{domain}::{op}"
        self.unsupported.setdefault(key, node)


def _all_value_names(gp: onnx.GraphProto) -> Iterator[str]:
    for seq in (gp.input, gp.output, gp.value_info):
        for vi in seq:
            yield vi.name
    for t in gp.initializer:
        yield t.name
    for node in gp.node:
        yield from node.output
        for a in node.attribute:
            for sub in itertools.chain([a.g] if a.HasField("g") else [], a.graphs):
                yield from _all_value_names(sub)


class _Scope:
    def __init__(self, parent: _Scope | None) -> None:
        self.parent = parent
        self.values: dict[str, Value] = {}

    def lookup(self, name: str) -> Value | None:
        scope: _Scope | None = self
        while scope is not None:
            v = scope.values.get(name)
            if v is not None:
                return v
            scope = scope.parent
        return None


class _GraphLowering:
    """Builds one ir.Graph from one GraphProto (and implements upgrades.Builder)."""

    def __init__(
        self,
        session: _Session,
        gp: onnx.GraphProto,
        parent: _Scope | None,
        init_source: onnx.GraphProto | None = None,
        real_inputs: set[str] | None = None,
    ) -> None:
        self.s = session
        self.gp = gp
        self.scope = _Scope(parent)
        self.init_source = init_source or gp
        self.real_inputs = real_inputs
        self.graph = Graph(name=gp.name or "main")
        self.types: dict[str, tuple[DataType, Any]] = {}
        for vi in itertools.chain(gp.input, gp.value_info, gp.output):
            info = type_info(vi.type)
            if info is not None:
                self.types[vi.name] = info

    # -- the graph -------------------------------------------------------------
    def run(self) -> Graph:
        for t in self.init_source.initializer:
            self.scope.values[t.name] = Value(t.name, const=self.s.reader.to_numpy(t))
        for sp in self.init_source.sparse_initializer:
            self.s.problems.append(f"sparse initializer {sp.values.name!r} is not supported")
            self.scope.values[sp.values.name] = Value(sp.values.name)
        for vi in self.gp.input:
            if self.real_inputs is not None and vi.name not in self.real_inputs:
                continue
            if vi.name in self.scope.values:
                continue  # an initializer listed as input: a constant
            self._graph_input(vi)
        for node in self.gp.node:
            self._declare_outputs(node)
        for node in self.gp.node:
            if node.op_type == "Constant" and node.domain in ("", DEFAULT_DOMAIN):
                continue
            self._lower_node(node)
        for vi in self.gp.output:
            self._check_elem_type(vi, "output")
        self.graph.outputs = [self._lookup(vi.name, "graph output") for vi in self.gp.output]
        if _needs_sort(self.graph):
            self.graph.sort()
        return self.graph

    def _graph_input(self, vi: onnx.ValueInfoProto) -> None:
        self._check_elem_type(vi, "input")
        info = type_info(vi.type)
        if info is None:
            self.s.problems.append(f"input {vi.name!r} is not a tensor ({vi.type})")
            info = (DataType.UNDEFINED, None)
        v = Value(vi.name, *info)
        self.scope.values[vi.name] = v
        self.graph.inputs.append(v)

    def _check_elem_type(self, vi: onnx.ValueInfoProto, what: str) -> None:
        elem = unknown_elem_type(vi.type)
        if elem is not None:
            self.s.problems.append(
                f"{what} {vi.name!r} has element type {elem_type_name(elem)}, "
                "which liteconv does not support"
            )

    def _declare_outputs(self, node: onnx.NodeProto) -> None:
        if node.op_type == "Constant" and node.domain in ("", DEFAULT_DOMAIN):
            self.scope.values[node.output[0]] = self._constant(node)
            return
        for name in node.output:
            if name:
                dtype, shape = self.types.get(name, (DataType.UNDEFINED, None))
                self.scope.values[name] = Value(name, dtype, shape)

    def _constant(self, node: onnx.NodeProto) -> Value:
        name = node.output[0]
        if len(node.attribute) != 1:
            self.s.problems.append(f"Constant node {node.name or name!r} needs one value attribute")
            return Value(name)
        a = node.attribute[0]
        if a.name == "sparse_value":
            self.s.problems.append(f"Constant node {node.name or name!r}: sparse_value")
            return Value(name)
        value = self._plain_attr(a)
        if a.name in ("value_float", "value_floats"):
            arr = np.asarray(value, np.float32)
        elif a.name in ("value_int", "value_ints"):
            arr = np.asarray(value, np.int64)
        elif a.name in ("value_string", "value_strings"):
            arr = np.array(value, dtype=object)
        else:
            arr = value
        return Value(name, const=arr)

    def _lookup(self, name: str, what: str) -> Value:
        v = self.scope.lookup(name)
        if v is None:
            raise BadModelError(f"{self.s.source}: {what} reads undefined value {name!r}")
        return v

    # -- nodes -----------------------------------------------------------------
    def _lower_node(self, node: onnx.NodeProto) -> None:
        domain = node.domain if node.domain not in ("", "ai.onnx") else DEFAULT_DOMAIN
        name = self.s.unique(node.name or node.op_type, self.s.node_names)
        what = f"node {name!r} ({node.op_type})"
        inputs: list[Value | None] = [self._lookup(i, what) if i else None for i in node.input]
        while inputs and inputs[-1] is None:
            inputs.pop()
        n = OnnxNode(
            op=node.op_type,
            domain=domain,
            name=name,
            version=self.s.opset.get(domain, 1),
            inputs=inputs,
            attrs={a.name: self._plain_attr(a) for a in node.attribute},
            outputs=self._node_outputs(node, name),
        )
        if domain != DEFAULT_DOMAIN:
            lowering = CONTRIB.get((domain, n.op))
            if lowering is not None and lowering(n, self):
                return
            if not self._domain_ok(n.op, domain):
                self._emit_unsupported(n)
                return
        if upgrade(n, self):
            return
        if not self._domain_ok(n.op, n.domain):
            self._emit_unsupported(n)
            return
        attrs = self._typed_attrs(n)
        self.emit(n.op, n.inputs, attrs, outputs=n.outputs, name=n.name)

    def _node_outputs(self, node: onnx.NodeProto, name: str) -> list[Value]:
        names = list(node.output)
        while names and not names[-1]:
            names.pop()
        outs = []
        for i, out in enumerate(names):
            if out:
                outs.append(self.scope.values[out])
            else:
                outs.append(Value(self.s.unique(f"{name}_unused{i}", self.s.value_names)))
        return outs

    @staticmethod
    def _domain_ok(op: str, domain: str) -> bool:
        return has_op(op) and get_op(op).domain == domain

    def _emit_unsupported(self, n: OnnxNode) -> None:
        self.s.unsupported_op(n.domain, n.op, n.name)
        node = Node(n.op, n.inputs, n.outputs, {}, n.name)  # keeps outputs produced
        self.graph.append(node)

    # -- attributes ------------------------------------------------------------
    def _plain_attr(self, a: AP) -> Any:
        if a.ref_attr_name:
            self.s.problems.append(f"attribute {a.name!r} refers to function attribute")
            return None
        t = a.type
        if t == AP.FLOAT:
            return float(a.f)
        if t == AP.INT:
            return int(a.i)
        if t == AP.STRING:
            return a.s.decode("utf-8", "replace")
        if t == AP.TENSOR:
            return self.s.reader.to_numpy(a.t)
        if t == AP.GRAPH:
            return a.g
        if t == AP.FLOATS:
            return [float(x) for x in a.floats]
        if t == AP.INTS:
            return [int(x) for x in a.ints]
        if t == AP.STRINGS:
            return [x.decode("utf-8", "replace") for x in a.strings]
        if t == AP.TENSORS:
            return [self.s.reader.to_numpy(x) for x in a.tensors]
        if t == AP.GRAPHS:
            return list(a.graphs)
        return a  # sparse tensors, type protos: refused when typed

    def _typed_attrs(self, n: OnnxNode) -> dict[str, Any]:
        opdef = get_op(n.op)
        out: dict[str, Any] = {}
        for key, value in n.attrs.items():
            spec = opdef.attrs.get(key)
            if spec is None:
                if key not in n.drop:
                    self.s.problems.append(
                        f"node {n.name!r} ({n.op}): attribute {key!r} is not supported"
                    )
                continue
            try:
                typed = self._convert(spec.type, value)
            except (TypeError, ValueError) as exc:
                self.s.problems.append(f"node {n.name!r} ({n.op}): attribute {key!r}: {exc}")
                continue
            if not spec.required and _same(typed, spec.default):
                continue
            out[key] = typed
        return out

    def _convert(self, kind: AttrType, value: Any) -> Any:
        if kind == AttrType.INT:
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if not isinstance(value, (int, np.integer)):
                raise TypeError(f"expected an int, got {type(value).__name__}")
            return int(value)
        if kind == AttrType.FLOAT:
            if not isinstance(value, (int, float)):
                raise TypeError(f"expected a float, got {type(value).__name__}")
            return float(value)
        if kind == AttrType.STRING:
            if not isinstance(value, str):
                raise TypeError(f"expected a string, got {type(value).__name__}")
            return value
        if kind in (AttrType.INTS, AttrType.FLOATS, AttrType.STRINGS):
            return self._convert_list(kind, value)
        if kind == AttrType.TENSOR:
            if not isinstance(value, np.ndarray):
                raise TypeError(f"expected a tensor, got {type(value).__name__}")
            return value
        if kind == AttrType.GRAPH:
            if not isinstance(value, onnx.GraphProto):
                raise TypeError(f"expected a graph, got {type(value).__name__}")
            return _GraphLowering(self.s, value, self.scope).run()
        if kind == AttrType.GRAPHS:
            return [_GraphLowering(self.s, g, self.scope).run() for g in value]
        raise TypeError(f"attribute type {kind} is not handled")

    @staticmethod
    def _convert_list(kind: AttrType, value: Any) -> list[Any]:
        item = {AttrType.INTS: AttrType.INT, AttrType.FLOATS: AttrType.FLOAT}.get(kind)
        if not isinstance(value, (list, tuple)):
            value = [value]
        if item == AttrType.INT:
            if not all(isinstance(x, (int, np.integer)) for x in value):
                raise TypeError("expected a list of ints")
            return [int(x) for x in value]
        if item == AttrType.FLOAT:
            if not all(isinstance(x, (int, float)) for x in value):
                raise TypeError("expected a list of floats")
            return [float(x) for x in value]
        if not all(isinstance(x, str) for x in value):
            raise TypeError("expected a list of strings")
        return list(value)

    # -- upgrades.Builder --------------------------------------------------------
    def const(self, array: np.ndarray, hint: str) -> Value:
        return Value(self.s.unique(hint, self.s.value_names), const=np.asarray(array))

    def emit(
        self,
        op: str,
        inputs: Sequence[Value | None],
        attrs: dict[str, Any] | None = None,
        outputs: Sequence[Value] | None = None,
        hint: str = "",
        name: str | None = None,
    ) -> list[Value]:
        if name is None:
            name = self.s.unique(hint or op, self.s.node_names)
        if outputs is None:
            outputs = [Value(self.s.unique(f"{name}_out", self.s.value_names))]
        if not has_op(op):
            self.s.unsupported_op(DEFAULT_DOMAIN, op, name)
        node = Node(op, inputs, outputs, attrs or {}, name)
        self.graph.append(node)
        _fill_types(node)
        return list(node.outputs)

    def problem(self, message: str) -> None:
        self.s.problems.append(message)


def _same(value: Any, default: Any) -> bool:
    if default is None or isinstance(value, (np.ndarray, Graph)):
        return False
    if isinstance(value, list) and isinstance(default, (list, tuple)):
        return list(value) == list(default)
    return type(value) is type(default) and value == default


def _fill_types(node: Node) -> None:
    """Infer dtype/shape of outputs ONNX inference did not type (nodes made by upgrades)."""
    if all(v.dtype != DataType.UNDEFINED for v in node.outputs) or not has_op(node.op):
        return
    infer = get_op(node.op).infer
    if infer is None:
        return
    try:
        results = infer(node)
    except Exception as exc:  # noqa: BLE001 - inference is best effort here
        logger.debug("type inference of %s failed: %s", node, exc)
        return
    for v, (dtype, shape) in zip(node.outputs, results, strict=False):
        if v.dtype == DataType.UNDEFINED:
            v.dtype, v.shape = DataType(dtype), shape


def _needs_sort(graph: Graph) -> bool:
    """True when a node reads a value of this graph produced after it."""
    position = {id(n): i for i, n in enumerate(graph.nodes)}
    for i, node in enumerate(graph.nodes):
        reads = list(node.inputs)
        for sub in node.subgraphs():
            reads += [v for inner in sub.all_nodes() for v in inner.inputs]
            reads += list(sub.outputs)
        for v in reads:
            if v is not None and v.producer is not None:
                at = position.get(id(v.producer))
                if at is not None and at >= i:
                    return True
    return False
