"""Lowering a TFLite subgraph into an IR graph.

Every TFLite tensor becomes a Value named after the tensor (graph inputs and outputs
keep the names LiteRT reports, so verification compares by name). Constant tensors
become constant Values; float16 weights feeding DEQUANTIZE and sparse weights feeding
DENSIFY are turned into float32 / dense constants here.

Each operator is lowered by the function registered for its builtin name in
:data:`parsers.tflite.ops.LOWERINGS`, which receives an :class:`OpContext`:

- ``ctx.input(i)``: the float view of input ``i``. A quantized tensor (int8/uint8/int16
  with scale and zero point) is read through a DequantizeLinear node (int32 biases are
  dequantized at parse time), so lowerings compute in float;
- ``ctx.out(j)``: the Value the lowering writes output ``j`` to. For a quantized output
  this is a float temporary that a QuantizeLinear node turns into the int tensor after
  the lowering, so the graph keeps TFLite's int8 tensors (``Value.quant`` set) and their
  numerics (DequantizeLinear -> float op -> QuantizeLinear);
- ops that only move data (reshape, transpose, slices, max-pool, ...) run on the int
  tensors directly when all their quantized tensors share one scale and zero point.

Tensors stay in TFLite's layout (NHWC); spatial ops get ``format="NHWC"``. Subgraph 0 is
the model; the other subgraphs belong to control-flow operators (WHILE, IF, CALL_ONCE, see
:mod:`parsers.tflite.ops.control`), which lower them with :meth:`_Lowering.inline` into loop
or branch bodies (or in place), binding their inputs to given Values; their tensors get
unique names. The whole model is lowered before anything is reported: unsupported
builtins, custom ops and unsupported options are collected into one
:class:`UnsupportedModelError`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ir import DataType, Graph, Node, QuantParams, Value, get_op, has_op
from parsers.errors import InputShapeError, UnsupportedModelError
from parsers.tflite.loader import Model, Operator, Quant, Subgraph, Tensor, load_model

__all__ = ["LoweringError", "OpContext", "parse_tflite"]

logger = logging.getLogger(__name__)

ACT_NONE, ACT_RELU, ACT_RELU_N1_TO_1, ACT_RELU6, ACT_TANH, ACT_SIGN_BIT = range(6)
_ACT_NAMES = {ACT_SIGN_BIT: "SIGN_BIT"}
_QUANT_TYPES = {DataType.INT8, DataType.UINT8, DataType.INT16, DataType.INT32}


class LoweringError(Exception):
    """Raised by a lowering for an operator it cannot express (one sentence)."""


def parse_tflite(
    path: str | os.PathLike, input_shapes: Mapping[str, Sequence[int | str]] | None = None
) -> Graph:
    """Read a ``.tflite`` model into an IR graph (first subgraph = the model).

    ``input_shapes`` pins input shapes by tensor name (dynamic dims of the model, or a
    resized input). Raises BadModelError, UnsupportedModelError or InputShapeError.
    """
    from parsers.tflite.ops import INT_SAFE, LOWERINGS

    model = load_model(path)
    shared = _Shared(model, LOWERINGS, INT_SAFE, {t.name for t in model.tensors},
                     resized=bool(input_shapes))  # fmt: skip
    low = _Lowering(shared, model.main, Graph(name="main"))
    low.graph.meta.update(
        {"source": model.source, "format": "tflite", "schema_version": model.version,
         "description": model.description}
    )  # fmt: skip
    low.graph_inputs(dict(input_shapes or {}))
    for op in model.operators:
        low.lower(op)
    low.finish()
    if any(k.startswith("CUSTOM(Flex") for k in shared.unsupported):
        shared.problems.append(
            "Flex (SELECT_TF_OPS) custom ops need the TensorFlow runtime: convert with "
            "TFLITE_BUILTINS only (TensorList ops of Keras RNNs then become builtins)"
        )
    if shared.unsupported or shared.problems:
        raise UnsupportedModelError.from_findings(shared.unsupported, shared.problems, "TFLite")
    return low.graph


@dataclass
class _Shared:
    """Model-wide state: the lowering table, names in use, findings, resource variables."""

    model: Model
    table: Mapping[str, Any]
    int_safe: set[str]
    names: set[str]
    resized: bool = False
    node_names: set[str] = field(default_factory=set)
    unsupported: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    variables: dict[str, Value] = field(default_factory=dict)  # resource name -> content
    stack: list[int] = field(default_factory=list)  # subgraphs being lowered
    called: set[int] = field(default_factory=set)  # CALL_ONCE init subgraphs inlined


class _Lowering:
    """One subgraph lowered into one IR graph: tensor -> Value maps of that subgraph.

    The main subgraph (index 0) keeps TFLite's tensor names; the subgraphs of control-flow
    operators are lowered (possibly several times) with unique names into bodies or inline.
    """

    def __init__(self, shared: _Shared, sg: Subgraph, graph: Graph, straight: bool = True):
        self.shared = shared
        self.model = shared.model
        self.sg = sg
        self.tensors = sg.tensors
        self.graph = graph
        self.straight = straight  # runs once, in order (main graph or inlined into it)
        self.unsupported = shared.unsupported
        self.problems = shared.problems
        self.names = shared.names
        self.node_names = shared.node_names
        self.resized = shared.resized
        self.values: dict[int, Value] = {}
        self.float_views: dict[int, Value] = {}

    # -- names -------------------------------------------------------------------
    def unique(self, base: str, taken: set[str] | None = None) -> str:
        taken = self.names if taken is None else taken
        name, k = base, 0
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        taken.add(name)
        return name

    def _tensor_name(self, t: Tensor) -> str:
        """Main-graph tensors keep their (reserved) names; subgraph tensors get unique ones."""
        return t.name if self.sg.index == 0 else self.unique(t.name)

    # -- graph inputs / tensors ----------------------------------------------------
    def graph_inputs(self, shapes: dict[str, Sequence[int | str]]) -> None:
        seen_names = {self.tensors[i].name for i in self.sg.inputs}
        unknown = sorted(set(shapes) - seen_names)
        if unknown:
            raise InputShapeError(
                f"--inputShape names {', '.join(unknown)}, but the model's inputs are "
                f"{', '.join(sorted(seen_names))}"
            )
        for i in self.sg.inputs:
            t = self.tensors[i]
            if t.name in shapes:
                dims = tuple(shapes[t.name])
                if len(dims) != len(t.shape):
                    raise InputShapeError(
                        f"input {t.name!r} has rank {len(t.shape)}, --inputShape gives "
                        f"{len(dims)} dims"
                    )
            else:
                dims = tuple(
                    d if s != -1 else ("batch" if k == 0 else f"{t.name}_d{k}")
                    for k, (d, s) in enumerate(zip(t.shape, t.signature, strict=True))
                )
            v = Value(t.name, t.dtype, dims)
            v.quant = _ir_quant(t.quant)
            self.values[i] = v
            self.graph.inputs.append(v)

    def tensor_value(self, index: int) -> Value:
        """The raw Value of tensor ``index`` (constants are created on first use)."""
        v = self.values.get(index)
        if v is not None:
            return v
        t = self.tensors[index]
        if t.data is not None and t.sparse is None:
            v = Value(self._tensor_name(t), const=t.data)
        elif t.is_variable:  # LSTM states etc.: their initial content (zeros)
            v = Value(self._tensor_name(t), const=np.zeros(t.shape, t.dtype.numpy))
        else:
            raise LoweringError(f"tensor {t.name!r} is read before any operator writes it")
        v.quant = _ir_quant(t.quant)
        self.values[index] = v
        return v

    def tensor_shape(self, index: int, sg: Subgraph | None = None) -> tuple[Any, ...] | None:
        """The declared shape of tensor ``index`` of ``sg`` (this subgraph by default;
        None dims where dynamic, None when the user resized the inputs)."""
        if self.resized:
            return None
        t = (sg or self.sg).tensors[index]
        return tuple(d if s != -1 else None for d, s in zip(t.shape, t.signature, strict=True))

    def output_value(self, index: int) -> Value:
        t = self.tensors[index]
        if index in self.values:
            raise LoweringError(f"tensor {t.name!r} is written twice")
        v = Value(self._tensor_name(t), t.dtype, self.tensor_shape(index))
        v.quant = _ir_quant(t.quant)
        self.values[index] = v
        return v

    # -- subgraphs ---------------------------------------------------------------------
    def subgraph(self, index: int) -> Subgraph:
        """Subgraph ``index`` for a control-flow operator (refusing loops of references)."""
        if not 0 < index < len(self.model.graphs):
            raise LoweringError(f"subgraph index {index} is out of range")
        if index in self.shared.stack or index == self.sg.index:
            raise LoweringError(f"subgraph {index} refers to itself")
        return self.model.graphs[index]

    def inline(
        self, index: int, graph: Graph, inputs: Sequence[Value], straight: bool = False
    ) -> list[Value]:
        """Lower subgraph ``index`` into ``graph`` with its inputs bound to ``inputs``;
        returns the Values of its outputs. ``straight``: the nodes run once, in order."""
        sg = self.subgraph(index)
        if len(inputs) != len(sg.inputs):
            raise LoweringError(
                f"subgraph {sg.name!r} takes {len(sg.inputs)} inputs, {len(inputs)} are given"
            )
        child = _Lowering(self.shared, sg, graph, straight)
        for t, v in zip(sg.inputs, inputs, strict=True):
            child.values[t] = v
        self.shared.stack.append(index)
        try:
            for op in sg.operators:
                child.lower(op)
        finally:
            self.shared.stack.pop()
        return [child.tensor_value(i) for i in sg.outputs]

    # -- operators -------------------------------------------------------------------
    def lower(self, op: Operator) -> None:
        key = op.code if op.code != "CUSTOM" else f"CUSTOM({op.custom_code})"
        first_out = self.tensors[op.outputs[0]].name if op.outputs else op.code.lower()
        name = self.unique(first_out, self.node_names)
        fn = self.shared.table.get(op.code) if op.code != "CUSTOM" else None
        if fn is None:
            self.unsupported.setdefault(key, name)
            self._placeholder(op, key, name)
            return
        ctx = OpContext(self, op, name, op.code in self.shared.int_safe)
        try:
            fn(ctx)
            ctx.finish()
        except LoweringError as exc:
            where = f" (in subgraph {self.sg.name!r})" if self.sg.index else ""
            self.problems.append(f"{op.code} {name!r}{where}: {exc}")
            self._placeholder(op, key, name)

    def _placeholder(self, op: Operator, key: str, name: str) -> None:
        """Keep the op's outputs defined so later operators still lower."""
        inputs = []
        for i in op.inputs:
            try:
                inputs.append(self.tensor_value(i) if i >= 0 else None)
            except LoweringError:
                inputs.append(None)
        outs = [self.values.get(j) or self.output_value(j) for j in op.outputs]
        outs = [v for v in outs if v.producer is None and not v.is_const]
        self.graph.append(Node(key, inputs, outs, {}, name))

    def finish(self) -> None:
        outs = []
        for i in self.sg.outputs:
            v = self.values.get(i)
            if v is None:
                try:
                    v = self.tensor_value(i)
                except LoweringError as exc:
                    self.problems.append(f"graph output: {exc}")
                    v = Value(self.tensors[i].name)
            if v.is_const or v.producer is None or v.name != self.tensors[i].name:
                src = v  # a constant, an input, or another tensor's value as output
                renamed = not v.is_const and v.producer is not None
                name = self.tensors[i].name if renamed else self.unique(f"{src.name}_out")
                v = Value(name, src.dtype, src.shape)
                self.graph.append(Node("Identity", [src], [v], {}, self.unique("output",
                                                                               self.node_names)))
            outs.append(v)
        self.graph.outputs = outs


class OpContext:
    """What a lowering sees of one TFLite operator (see the module docstring)."""

    def __init__(self, low: _Lowering, op: Operator, name: str, int_safe: bool) -> None:
        self.low = low
        self.op = op
        self.opts = op.options
        self.name = name
        self._pending: list[tuple[Value, Value, Tensor]] = []
        fused = getattr(op.options, "FusedActivationFunction", None)
        if fused is not None and fused() != ACT_NONE:
            int_safe = False  # the activation clamps in real values: go through float
        self.int_mode = int_safe and self._same_quant()

    # -- inspection --------------------------------------------------------------------
    @property
    def num_inputs(self) -> int:
        return len(self.op.inputs)

    def has(self, i: int) -> bool:
        return i < len(self.op.inputs) and self.op.inputs[i] >= 0

    def tensor(self, i: int) -> Tensor:
        if not self.has(i):
            raise LoweringError(f"input {i} is missing")
        return self.low.tensors[self.op.inputs[i]]

    def out_tensor(self, j: int = 0) -> Tensor:
        return self.low.tensors[self.op.outputs[j]]

    def shape(self, i: int) -> tuple[Any, ...] | None:
        """Shape of input ``i`` as the IR knows it (None dims when unknown)."""
        return self.raw(i).shape

    def static_shape(self, i: int) -> tuple[int, ...] | None:
        s = self.shape(i)
        return s if s is not None and all(isinstance(d, int) for d in s) else None

    def rank(self, i: int) -> int:
        s = self.shape(i)
        if s is None:
            raise LoweringError(f"input {i} has unknown rank")
        return len(s)

    def const(self, i: int) -> np.ndarray | None:
        """Raw constant data of input ``i`` (None when it is computed at run time)."""
        if not self.has(i):
            return None
        v = self.raw(i)
        return v.const

    def need_const(self, i: int, what: str) -> np.ndarray:
        arr = self.const(i)
        if arr is None:
            raise LoweringError(f"{what} (input {i}) must be a constant")
        return arr

    def fconst(self, i: int) -> np.ndarray | None:
        """Constant input ``i`` dequantized to float32 (or as is when not quantized)."""
        arr = self.const(i)
        q = self.tensor(i).quant if arr is not None else None
        if arr is None or q is None or self.tensor(i).dtype not in _QUANT_TYPES:
            return arr
        return _dequantize(arr, q)

    # -- reading ---------------------------------------------------------------------
    def raw(self, i: int) -> Value:
        if not self.has(i):
            raise LoweringError(f"input {i} is missing")
        return self.low.tensor_value(self.op.inputs[i])

    def input(self, i: int) -> Value | None:
        """Float view of input ``i`` (raw in int mode); None for an omitted optional."""
        if not self.has(i):
            return None
        t = self.tensor(i)
        if self.int_mode or t.quant is None or t.dtype not in _QUANT_TYPES:
            return self.raw(i)
        index = self.op.inputs[i]
        view = self.low.float_views.get(index)
        if view is not None:
            return view
        raw = self.raw(i)
        if raw.is_const and t.dtype == DataType.INT32:  # biases: fold now
            view = self.constant(_dequantize(raw.const, t.quant), f"{t.name}_float")
        else:
            view = self._dequantize_node(raw, t.quant, t.dtype)
        self.low.float_views[index] = view
        return view

    def weight(self, i: int, perm: Sequence[int] | None = None) -> Value:
        """Float view of constant input ``i`` with its data transposed by ``perm``."""
        t = self.tensor(i)
        arr = self.need_const(i, "the weight")
        if perm is None:
            return self.input(i)  # type: ignore[return-value]
        data = np.ascontiguousarray(np.transpose(arr, perm))
        q = t.quant
        if q is None or t.dtype not in _QUANT_TYPES:
            return self.constant(data, f"{t.name}_t")
        if t.dtype == DataType.INT32:
            return self.constant(_dequantize(arr, q).transpose(perm).copy(), f"{t.name}_t")
        axis = None if q.axis is None else list(perm).index(q.axis)
        moved = Quant(q.scale, q.zero_point, axis)
        raw = self.constant(data, f"{t.name}_t")
        raw.quant = _ir_quant(moved)
        return self._dequantize_node(raw, moved, t.dtype)

    def _dequantize_node(self, raw: Value, q: Quant, dtype: DataType) -> Value:
        scale, zp = self._qparams(q, dtype, raw.name)
        attrs = {"axis": q.axis} if q.axis is not None else {}
        return self.one("DequantizeLinear", [raw, scale, zp], attrs, hint=f"{raw.name}_dq")

    def _qparams(self, q: Quant, dtype: DataType, base: str) -> tuple[Value, Value]:
        per_channel = q.axis is not None
        scale = q.scale if per_channel else q.scale.reshape(())
        zp = q.zero_point if per_channel else q.zero_point.reshape(())
        return (
            self.constant(scale.astype(np.float32), f"{base}_scale"),
            self.constant(zp.astype(dtype.numpy), f"{base}_zero_point"),
        )

    # -- writing ---------------------------------------------------------------------
    def out(self, j: int = 0) -> Value:
        """The Value output ``j`` is written to (a float temporary when quantized)."""
        t = self.out_tensor(j)
        raw = self.low.output_value(self.op.outputs[j])
        if self.int_mode or t.quant is None or t.dtype not in _QUANT_TYPES:
            return raw
        tmp = Value(self.low.unique(f"{t.name}_float"), DataType.FLOAT)
        self._pending.append((tmp, raw, t))
        return tmp

    def raw_out(self, j: int = 0) -> Value:
        """The Value of output tensor ``j`` as stored (quantized outputs stay int)."""
        return self.low.output_value(self.op.outputs[j])

    def bind(self, j: int, value: Value) -> None:
        """Make output tensor ``j`` the existing ``value`` (no node is emitted)."""
        index = self.op.outputs[j]
        if index in self.low.values:
            raise LoweringError(f"tensor {self.out_tensor(j).name!r} is written twice")
        self.low.values[index] = value

    def set_out(self, j: int, value: Value) -> None:
        """Make output ``j`` equal ``value`` (quantized or copied as needed)."""
        self.emit("Identity", [value], outputs=[self.out(j)])

    def finish(self) -> None:
        for tmp, raw, t in self._pending:
            assert t.quant is not None
            scale, zp = self._qparams(t.quant, t.dtype, t.name)
            attrs = {"axis": t.quant.axis} if t.quant.axis is not None else {}
            self.emit("QuantizeLinear", [tmp, scale, zp], attrs, outputs=[raw])

    def constant(self, array: Any, hint: str) -> Value:
        return Value(self.low.unique(hint or "const"), const=np.asarray(array))

    def ints(self, values: Sequence[int], hint: str = "ints") -> Value:
        return self.constant(np.asarray(values, np.int64), f"{self.name}_{hint}")

    def scalar(self, value: float, like: Value | None = None, hint: str = "c") -> Value:
        dtype = like.dtype.numpy if like is not None and like.dtype.is_float else np.float32
        return self.constant(np.asarray(value, dtype), f"{self.name}_{hint}")

    def emit(
        self,
        op: str,
        inputs: Sequence[Value | None],
        attrs: dict[str, Any] | None = None,
        outputs: Sequence[Value] | int = 1,
        hint: str = "",
    ) -> list[Value]:
        if not has_op(op):
            raise LoweringError(f"the IR has no {op} op")
        name = self.low.unique(hint or f"{self.name}/{op}", self.low.node_names)
        if isinstance(outputs, int):
            outputs = [Value(self.low.unique(f"{name}_out")) for _ in range(outputs)]
        while inputs and inputs[-1] is None:
            inputs = list(inputs)[:-1]
        node = Node(op, inputs, outputs, _clean_attrs(op, attrs or {}), name)
        self.low.graph.append(node)
        _fill_types(node)
        return list(node.outputs)

    def one(
        self,
        op: str,
        inputs: Sequence[Value | None],
        attrs: dict[str, Any] | None = None,
        out: Value | None = None,
        hint: str = "",
    ) -> Value:
        return self.emit(op, inputs, attrs, [out] if out is not None else 1, hint)[0]

    def activation(self, x: Value, code: int, out: Value | None = None) -> Value:
        """Apply a TFLite fused activation to ``x`` (into ``out`` when given)."""
        if code == ACT_NONE:
            return x if out is None else self.one("Identity", [x], out=out)
        if code == ACT_RELU:
            return self.one("Relu", [x], out=out)
        if code == ACT_RELU6:
            return self.one("Clip", [x, self.scalar(0.0, x), self.scalar(6.0, x)], out=out)
        if code == ACT_RELU_N1_TO_1:
            return self.one("Clip", [x, self.scalar(-1.0, x), self.scalar(1.0, x)], out=out)
        if code == ACT_TANH:
            return self.one("Tanh", [x], out=out)
        raise LoweringError(
            f"fused activation {_ACT_NAMES.get(code, code)} is not supported"
        )

    def finish_op(
        self, op: str, inputs: Sequence[Value | None], attrs: dict[str, Any] | None,
        act: int, j: int = 0,
    ) -> None:
        """Emit ``op`` then the fused activation ``act`` into output ``j``."""
        if act == ACT_NONE:
            self.emit(op, inputs, attrs, outputs=[self.out(j)])
            return
        y = self.one(op, inputs, attrs)
        self.activation(y, act, self.out(j))

    # -- quantization ----------------------------------------------------------------------
    def _same_quant(self) -> bool:
        """True when every quantized data tensor of the op shares one dtype and params."""
        ref: tuple[DataType, Quant] | None = None
        tensors = [self.low.tensors[i] for i in (*self.op.inputs, *self.op.outputs)
                   if i >= 0]  # fmt: skip
        for t in tensors:
            if t.quant is None or t.dtype not in _QUANT_TYPES:
                continue
            if t.dtype == DataType.INT32:
                return False
            if ref is None:
                ref = (t.dtype, t.quant)
            elif ref[0] != t.dtype or not ref[1].same_as(t.quant):
                return False
        return ref is not None


def _dequantize(arr: np.ndarray, q: Quant) -> np.ndarray:
    shape = [1] * arr.ndim
    if q.axis is not None and arr.ndim:
        shape[q.axis] = -1
    scale = q.scale.astype(np.float64).reshape(shape if q.axis is not None else ())
    zp = q.zero_point.reshape(shape if q.axis is not None else ())
    return ((arr.astype(np.float64) - zp) * scale).astype(np.float32)


def _ir_quant(q: Quant | None) -> QuantParams | None:
    if q is None:
        return None
    return QuantParams(scale=q.scale.copy(), zero_point=q.zero_point.copy(), axis=q.axis)


def _clean_attrs(op: str, attrs: dict[str, Any]) -> dict[str, Any]:
    """Drop attributes equal to the op's declared default."""
    opdef = get_op(op)
    out = {}
    for k, v in attrs.items():
        spec = opdef.attrs.get(k)
        if spec is None:
            raise LoweringError(f"{op} has no attribute {k!r}")
        if not spec.required and _same(v, spec.default):
            continue
        out[k] = v
    return out


def _same(value: Any, default: Any) -> bool:
    if default is None or isinstance(value, np.ndarray):
        return False
    if isinstance(value, (list, tuple)) and isinstance(default, (list, tuple)):
        return list(value) == list(default)
    return type(value) is type(default) and value == default


def _fill_types(node: Node) -> None:
    """Infer output dtype/shape; keep what the file declared where inference is blind."""
    infer = get_op(node.op).infer
    if infer is None:
        return
    try:
        results = infer(node)
    except Exception as exc:  # noqa: BLE001 - inference is best effort here
        logger.debug("type inference of %s failed: %s", node, exc)
        return
    for v, (dtype, shape) in zip(node.outputs, results, strict=False):
        if v.dtype == DataType.UNDEFINED and dtype is not None:
            v.dtype = DataType(dtype)
        if shape is None:
            continue
        shape = tuple(shape)
        if v.shape is None or len(v.shape) != len(shape):
            v.shape = shape
        else:
            v.shape = tuple(
                d if d is not None and not isinstance(d, str) or old is None else old
                for d, old in zip(shape, v.shape, strict=True)
            )
