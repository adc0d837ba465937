"""IR -> ONNX, for graph dumps (``--dump-dir``: one model per pass, opened in Netron).

- Ops of domain ``ai.onnx`` are written as they are (the IR holds the latest ONNX form)
  at the latest opset ONNX defines; attributes are typed by the op's declaration and
  omitted when None or equal to both the IR and the ONNX default. An ai.onnx op carrying
  a non-default attribute ONNX does not know (``format="NHWC"``) is written under the
  ``liteconv`` domain instead, as are ops of the liteconv (fused) domain and ops outside
  the vocabulary; other domains keep their OpDef.domain.
- Constants (of every graph level) become initializers of the main graph; with
  :func:`save_onnx` their data goes to ``<file>.data`` when the total passes 1.8 GB,
  written tensor by tensor so the whole model never sits in one message.
- Values get unique names (the first holder keeps its IR name); graph outputs that repeat
  a value, and subgraph outputs not produced inside the subgraph, go through Identity.
- value_info carries dtype and shape (symbolic dims as dim_param) of intermediate values.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import IO, Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ir import AttrType, DataType, Graph, Node, Value, get_op, has_op

__all__ = ["EXTERNAL_DATA_THRESHOLD", "export_onnx", "save_onnx"]

EXTERNAL_DATA_THRESHOLD = int(1.8e9)
"""Total constant bytes above which :func:`save_onnx` writes external data."""
_EXTERNAL_MIN_BYTES = 1024  # smaller tensors stay inline even in external mode
_CUSTOM_DOMAIN = "liteconv"


def export_onnx(graph: Graph) -> onnx.ModelProto:
    """The IR graph as an ONNX model (all tensor data inline)."""
    return _Exporter(graph, None).model()


def save_onnx(graph: Graph, path: str | os.PathLike) -> None:
    """Write ``graph`` to ``path``; external data in ``<name>.data`` when it is large."""
    path = Path(path)
    total = sum(v.const.nbytes for v in _constants(graph))  # type: ignore[union-attr]
    if total <= EXTERNAL_DATA_THRESHOLD:
        onnx.save(export_onnx(graph), str(path))
        return
    location = f"{path.name}.data"
    with open(path.parent / location, "wb") as sink:
        model = _Exporter(graph, _DataSink(sink, location)).model()
    onnx.save(model, str(path))


class _DataSink:
    """Appends tensor bytes to one external data file (4 KiB aligned)."""

    def __init__(self, stream: IO[bytes], location: str) -> None:
        self.stream = stream
        self.location = location
        self.offset = 0

    def move_out(self, tensor: onnx.TensorProto) -> None:
        if len(tensor.raw_data) < _EXTERNAL_MIN_BYTES:
            return
        pad = -self.offset % 4096
        self.stream.write(b"\0" * pad)
        self.offset += pad
        data = tensor.raw_data
        self.stream.write(data)
        entries = {"location": self.location, "offset": self.offset, "length": len(data)}
        for key, value in entries.items():
            tensor.external_data.add(key=key, value=str(value))
        tensor.data_location = onnx.TensorProto.EXTERNAL
        tensor.ClearField("raw_data")
        self.offset += len(data)


def _constants(graph: Graph) -> list[Value]:
    seen: dict[int, Value] = {}
    for g in graph.all_graphs():
        for v in g.values():
            if v.is_const:
                seen.setdefault(id(v), v)
    return list(seen.values())


class _Exporter:
    def __init__(self, graph: Graph, sink: _DataSink | None) -> None:
        self.graph = graph
        self.sink = sink
        self.names: dict[int, str] = {}
        self.taken: set[str] = set()
        self.node_names: set[str] = set()
        self.domains: set[str] = set()
        self.opset = onnx.defs.onnx_opset_version()
        for g in graph.all_graphs():
            for v in g.values():
                self._name(v)

    # -- naming ----------------------------------------------------------------
    def _name(self, v: Value) -> str:
        name = self.names.get(id(v))
        if name is None:
            name = self._fresh(v.name or "value", self.taken)
            self.names[id(v)] = name
        return name

    @staticmethod
    def _fresh(base: str, taken: set[str]) -> str:
        name = base
        for i in itertools.count(1):
            if name not in taken:
                break
            name = f"{base}_{i}"
        taken.add(name)
        return name

    # -- model -----------------------------------------------------------------
    def model(self) -> onnx.ModelProto:
        gp = self._graph(self.graph, outer=set(), main=True)
        for v in _constants(self.graph):
            gp.initializer.append(self._tensor(v.const, self._name(v)))  # type: ignore[arg-type]
        opsets = [helper.make_opsetid("", self.opset)]
        opsets += [helper.make_opsetid(d, 1) for d in sorted(self.domains)]
        try:
            ir_version = helper.find_min_ir_version_for(opsets[:1])
        except ValueError:
            ir_version = onnx.IR_VERSION
        model = helper.make_model(gp, opset_imports=opsets, ir_version=ir_version)
        model.producer_name = "liteconv"
        for key in ("producer", "source"):
            if self.graph.meta.get(key):
                model.metadata_props.add(key=f"source_{key}", value=str(self.graph.meta[key]))
        return model

    def _tensor(self, array: np.ndarray, name: str) -> onnx.TensorProto:
        tensor = numpy_helper.from_array(np.asarray(array), name)
        if self.sink is not None and tensor.HasField("raw_data"):
            self.sink.move_out(tensor)
        return tensor

    # -- graphs ----------------------------------------------------------------
    def _graph(self, g: Graph, outer: set[int], main: bool) -> onnx.GraphProto:
        local = {id(v) for v in g.inputs} | {id(o) for n in g.nodes for o in n.outputs}
        scope = outer | local
        nodes = [self._node(n, scope) for n in g.nodes]
        outputs: list[onnx.ValueInfoProto] = []
        used: set[str] = set()
        for v in g.outputs:
            name = self._name(v)
            produced_here = id(v) in local or (main and v.is_const)
            if name in used or not produced_here:
                alias = self._fresh(f"{name}_out", self.taken)
                nodes.append(
                    helper.make_node("Identity", [name], [alias], self._node_name("Identity"))
                )
                name = alias
            used.add(name)
            outputs.append(self._value_info(v, name))
        inputs = [self._value_info(v, self._name(v)) for v in g.inputs]
        boundary = {id(v) for v in g.inputs} | {id(v) for v in g.outputs}
        value_info = [
            self._value_info(o, self._name(o))
            for n in g.nodes
            for o in n.outputs
            if id(o) not in boundary and o.dtype != DataType.UNDEFINED
        ]
        return helper.make_graph(nodes, g.name or "graph", inputs, outputs, value_info=value_info)

    def _value_info(self, v: Value, name: str) -> onnx.ValueInfoProto:
        dtype, shape = _type_of(v)
        if dtype == DataType.UNDEFINED:
            return onnx.ValueInfoProto(name=name)
        dims = None if shape is None else list(shape)
        return helper.make_tensor_value_info(name, int(dtype), dims)

    def _node_name(self, base: str) -> str:
        return self._fresh(base, self.node_names)

    # -- nodes -----------------------------------------------------------------
    def _node(self, node: Node, scope: set[int]) -> onnx.NodeProto:
        opdef = get_op(node.op) if has_op(node.op) else None
        domain = opdef.domain if opdef is not None else _CUSTOM_DOMAIN
        schema = _schema(node.op) if domain == "ai.onnx" else None
        attrs: list[onnx.AttributeProto] = []
        for key, value in node.attrs.items():
            if value is None:
                continue
            spec = opdef.attrs.get(key) if opdef is not None else None
            onnx_attr = schema.attributes.get(key) if schema is not None else None
            if spec is not None and not spec.required and _same(value, spec.default):
                if onnx_attr is None or _same(value, _onnx_default(onnx_attr)):
                    continue
            if schema is not None and onnx_attr is None:
                domain = _CUSTOM_DOMAIN  # e.g. format="NHWC": not plain ONNX any more
            attrs.append(self._attr(key, value, spec.type if spec is not None else None, scope))
        if domain == "ai.onnx":
            domain = ""
        else:
            self.domains.add(domain)
        proto = helper.make_node(
            node.op,
            ["" if v is None else self._name(v) for v in node.inputs],
            [self._name(v) for v in node.outputs],
            name=self._node_name(node.name or node.op),
            domain=domain,
        )
        proto.attribute.extend(attrs)
        return proto

    def _attr(
        self, key: str, value: Any, kind: AttrType | None, scope: set[int]
    ) -> onnx.AttributeProto:
        if isinstance(value, Graph):
            return helper.make_attribute(key, self._graph(value, scope, main=False))
        if isinstance(value, (list, tuple)) and value and isinstance(value[0], Graph):
            return helper.make_attribute(key, [self._graph(g, scope, main=False) for g in value])
        if isinstance(value, np.ndarray):
            return helper.make_attribute(key, numpy_helper.from_array(value))
        if kind is not None and kind in _LIST_TYPES:
            items = [_SCALAR_CAST[kind](x) for x in value]
            return helper.make_attribute(key, items, attr_type=_LIST_TYPES[kind])
        if kind == AttrType.INT or isinstance(value, (bool, np.integer)):
            return helper.make_attribute(key, int(value))
        if kind == AttrType.FLOAT or isinstance(value, np.floating):
            return helper.make_attribute(key, float(value))
        return helper.make_attribute(key, value)


_LIST_TYPES = {
    AttrType.INTS: onnx.AttributeProto.INTS,
    AttrType.FLOATS: onnx.AttributeProto.FLOATS,
    AttrType.STRINGS: onnx.AttributeProto.STRINGS,
}
_SCALAR_CAST = {AttrType.INTS: int, AttrType.FLOATS: float, AttrType.STRINGS: str}


def _type_of(v: Value) -> tuple[DataType, tuple | None]:
    """dtype/shape of ``v``; asks the producer's inference when the value is untyped."""
    if v.dtype != DataType.UNDEFINED or v.producer is None or not has_op(v.producer.op):
        return v.dtype, v.shape
    infer = get_op(v.producer.op).infer
    try:
        results = infer(v.producer) if infer is not None else []
        dtype, shape = results[v.producer.outputs.index(v)]
    except Exception:  # noqa: BLE001 - a dump must not fail on inference
        return v.dtype, v.shape
    return DataType(dtype), shape


def _schema(op: str) -> onnx.defs.OpSchema | None:
    try:
        return onnx.defs.get_schema(op, "")
    except onnx.defs.SchemaError:
        return None


def _onnx_default(attr: onnx.defs.OpSchema.Attribute) -> Any:
    default = attr.default_value
    if default is None or default.type == onnx.AttributeProto.UNDEFINED:
        return None
    value = helper.get_attribute_value(default)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [x.decode() if isinstance(x, bytes) else x for x in value]
    return value


def _same(value: Any, default: Any) -> bool:
    if default is None or isinstance(value, (np.ndarray, Graph)):
        return False
    if isinstance(value, (list, tuple)) and isinstance(default, (list, tuple)):
        return list(value) == list(default)
    if isinstance(value, float) or isinstance(default, float):  # ONNX defaults are float32
        return isinstance(value, (int, float)) and np.float32(value) == np.float32(default)
    return value == default
