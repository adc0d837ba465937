"""Lowering a Caffe net (deploy ``.prototxt`` + trained ``.caffemodel``) into an IR graph.

- Layers run in prototxt order; only layers active in the TEST phase are lowered
  (``include``/``exclude`` rules on ``phase``). The V1 ``layers`` prototxt format is
  refused (upgrade it with Caffe's ``upgrade_net_proto_text``); a caffemodel may hold
  its blobs in either format.
- Net inputs come from ``input`` + ``input_shape``/``input_dim`` or from ``Input``
  layers; ``input_shapes`` (``--inputShape``) overrides their shapes. All data is
  float32 in Caffe's NCHW layout, unchanged.
- Blobs are named by their Caffe top names. An in-place layer (top == bottom) gets
  the top name for its result and the value it overwrote is renamed
  ``<top>/<producing layer>`` (a net input keeps its name; the result is renamed
  ``<top>/<layer>`` instead), so
  the net outputs (tops no later layer reads) carry their Caffe names.
- Weights are matched to layers by name; a missing layer or a blob whose shape does not
  match the prototxt raises :class:`BadModelError` naming the layer.
- Per-layer lowerings live in :mod:`parsers.caffe.layers`; unsupported layer types and
  parameters are collected over the whole net and raised as one
  :class:`UnsupportedModelError`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ir import DataType, Graph, Node, Value, get_op, has_op
from parsers.caffe.proto import read_caffemodel, read_prototxt
from parsers.errors import BadModelError, InputShapeError, UnsupportedModelError

__all__ = ["LayerContext", "LayerProblem", "parse_caffe"]

logger = logging.getLogger(__name__)

_TEST = 1  # caffe.Phase.TEST
_DATA_LAYERS = {"Input"}
_NO_OP_LAYERS = {"Silence"}


class LayerProblem(Exception):
    """A layer uses a parameter combination liteconv cannot lower (collected, not fatal)."""


def parse_caffe(
    prototxt: str | os.PathLike,
    caffemodel: str | os.PathLike,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> Graph:
    """Read a Caffe net and its weights into an IR graph (see the module docstring).

    Raises BadModelError, UnsupportedModelError or InputShapeError (parsers.errors).
    """
    from parsers.caffe.layers import LOWERINGS

    net = read_prototxt(prototxt)
    if len(net.layers) and not len(net.layer):
        raise UnsupportedModelError(
            f"{prototxt}: the V1 'layers' prototxt format is not supported; upgrade it with "
            "Caffe's upgrade_net_proto_text"
        )
    weights = _Weights(read_caffemodel(caffemodel), Path(caffemodel).name)
    builder = _NetBuilder(net, weights, str(prototxt))
    builder.add_inputs(input_shapes)
    for layer in builder.layers:
        builder.lower(layer, LOWERINGS)
    if builder.unsupported or builder.problems:
        raise UnsupportedModelError.from_findings(builder.unsupported, builder.problems, "Caffe")
    return builder.finish()


# -- weights ---------------------------------------------------------------------------
class _Weights:
    """The caffemodel's blobs by layer name (``layer`` or V1 ``layers``)."""

    def __init__(self, model: Any, source: str) -> None:
        self.source = source
        self.by_layer: dict[str, list[Any]] = {}
        for layer in list(model.layer) + list(model.layers):
            if len(layer.blobs):
                self.by_layer.setdefault(layer.name, list(layer.blobs))

    def get(self, layer: str, kind: str) -> list[np.ndarray]:
        blobs = self.by_layer.get(layer)
        if blobs is None:
            raise BadModelError(
                f"layer {layer!r} ({kind}) has no weights in {self.source}: "
                "the caffemodel does not match the prototxt"
            )
        return [_blob_array(b, layer, self.source) for b in blobs]


def _blob_array(blob: Any, layer: str, source: str) -> np.ndarray:
    if len(blob.shape.dim):
        shape = tuple(int(d) for d in blob.shape.dim)
    else:
        shape = tuple(int(d) for d in (blob.num, blob.channels, blob.height, blob.width))
    data = np.asarray(blob.data if len(blob.data) else blob.double_data, dtype=np.float32)
    if data.size != math.prod(shape):
        raise BadModelError(
            f"layer {layer!r} in {source}: blob of shape {list(shape)} holds {data.size} values"
        )
    return data.reshape(shape)


# -- phase rules -----------------------------------------------------------------------
def _active(layer: Any) -> bool:
    def matches(rule: Any) -> bool:
        return not rule.HasField("phase") or rule.phase == _TEST

    if len(layer.include):
        return any(matches(r) for r in layer.include)
    return not any(matches(r) for r in layer.exclude)


# -- the builder -----------------------------------------------------------------------
class _NetBuilder:
    def __init__(self, net: Any, weights: _Weights, source: str) -> None:
        self.net = net
        self.weights = weights
        self.source = source
        self.graph = Graph(name=net.name or "caffe")
        self.layers = [layer for layer in net.layer if _active(layer)]
        self.blobs: dict[str, Value] = {}
        self.broken: set[int] = set()  # ids of placeholder values of failed layers
        self.value_names: set[str] = set()
        self.node_names: set[str] = set()
        self.unsupported: dict[str, str] = {}
        self.problems: list[str] = []

    # -- names -------------------------------------------------------------------
    def unique(self, base: str, taken: set[str]) -> str:
        name, k = base, 0
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        taken.add(name)
        return name

    # -- inputs --------------------------------------------------------------------
    def add_inputs(self, overrides: Mapping[str, Sequence[int]] | None) -> None:
        declared: list[tuple[str, list[int] | None]] = []
        net = self.net
        dims = list(net.input_dim)
        for i, name in enumerate(net.input):
            if i < len(net.input_shape):
                declared.append((name, [int(d) for d in net.input_shape[i].dim]))
            elif len(dims) >= 4 * (i + 1):
                declared.append((name, [int(d) for d in dims[4 * i : 4 * i + 4]]))
            else:
                declared.append((name, None))
        for layer in self.layers:
            if layer.type != "Input":
                continue
            shapes = list(layer.input_param.shape)
            for j, top in enumerate(layer.top):
                shape = shapes[j] if j < len(shapes) else (shapes[0] if shapes else None)
                declared.append((top, None if shape is None else [int(d) for d in shape.dim]))
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - {name for name, _ in declared})
        if unknown:
            names = ", ".join(name for name, _ in declared)
            raise InputShapeError(f"--inputShape names {unknown} are not net inputs ({names})")
        if not declared:
            raise BadModelError(f"{self.source}: the net declares no input (Input layer or input:)")
        for name, shape in declared:
            if name in overrides:
                shape = [int(d) for d in overrides[name]]
            if shape is None:
                raise InputShapeError(f"net input {name!r} has no shape: pass --inputShape")
            v = Value(name, DataType.FLOAT, tuple(shape))
            self.value_names.add(name)
            self.graph.inputs.append(v)
            self.blobs[name] = v

    # -- layers --------------------------------------------------------------------
    def lower(self, layer: Any, table: Mapping[str, Any]) -> None:
        if layer.type in _DATA_LAYERS or layer.type in _NO_OP_LAYERS:
            return
        name = self.unique(layer.name or layer.type, self.node_names)
        what = f"layer {layer.name!r} ({layer.type})"
        bottoms = []
        for b in layer.bottom:
            if b not in self.blobs:
                raise BadModelError(f"{self.source}: {what} reads blob {b!r} nobody produces")
            bottoms.append(self.blobs[b])
        if any(id(v) in self.broken for v in bottoms):
            self._placeholders(layer)
            return
        fn = table.get(layer.type)
        if fn is None:
            self.unsupported.setdefault(layer.type, layer.name)
            self._placeholders(layer)
            return
        ctx = LayerContext(self, layer, name, bottoms)
        try:
            fn(ctx)
        except LayerProblem as exc:
            self.problems.append(f"{what}: {exc}")
            self._placeholders(layer)
            return
        if len(ctx.results) != len(layer.top):
            raise AssertionError(f"{what}: lowering bound {len(ctx.results)} of {len(layer.top)}")
        for top, value in zip(layer.top, ctx.results, strict=True):
            self._bind(top, value, layer.name)

    def _placeholders(self, layer: Any) -> None:
        for top in layer.top:
            v = Value(self.unique(top, self.value_names))
            self.broken.add(id(v))
            self.blobs[top] = v

    def _bind(self, top: str, value: Value, layer: str) -> None:
        """``top`` now names ``value``; an overwritten (in-place) value is renamed."""
        old = self.blobs.get(top)
        if old is not None and (old.producer is None or old.name != top):
            # in place on a net input: the input keeps its name, the result is renamed
            self.value_names.discard(value.name)
            value.name = self.unique(f"{top}/{layer}", self.value_names)
            self.blobs[top] = value
            return
        if old is not None:
            old.name = self.unique(f"{top}/{old.producer.name}", self.value_names)
        elif top in self.value_names:
            raise BadModelError(f"{self.source}: blob {top!r} is produced by two layers")
        self.value_names.discard(value.name)
        value.name = top
        self.value_names.add(top)
        self.blobs[top] = value

    def finish(self) -> Graph:
        """Net outputs: blobs no later layer reads, in production order."""
        available: list[str] = []
        for layer in self.layers:
            if layer.type in _DATA_LAYERS:
                continue
            available = [b for b in available if b not in set(layer.bottom)]
            available = [b for b in available if b not in set(layer.top)] + list(layer.top)
        self.graph.outputs = [self.blobs[name] for name in available]
        if not self.graph.outputs:
            raise BadModelError(f"{self.source}: the net computes nothing")
        self.graph.meta.update({"source": self.source, "format": "caffe"})
        return self.graph


class LayerContext:
    """What a lowering sees: the layer, its bottoms, weights, and node emission."""

    def __init__(self, net: _NetBuilder, layer: Any, name: str, bottoms: list[Value]) -> None:
        self._net = net
        self.layer = layer
        self.name = name
        self.bottoms = bottoms
        self.results: list[Value] = []
        self._named = False  # the first node emitted gets the layer's name

    @property
    def what(self) -> str:
        return f"layer {self.layer.name!r} ({self.layer.type})"

    def shape(self, i: int = 0) -> tuple[int, ...]:
        """The static shape of bottom ``i`` (Caffe nets have static shapes)."""
        shape = self.bottoms[i].shape
        if shape is None or not all(isinstance(d, int) for d in shape):
            raise LayerProblem(f"the shape of bottom {self.layer.bottom[i]!r} is unknown")
        return tuple(int(d) for d in shape)

    # -- weights ---------------------------------------------------------------------
    def blobs(self, count: int | tuple[int, int]) -> list[np.ndarray]:
        """The layer's trained blobs; ``count`` is exact or a (min, max) range."""
        arrays = self._net.weights.get(self.layer.name, self.layer.type)
        lo, hi = (count, count) if isinstance(count, int) else count
        if not lo <= len(arrays) <= hi:
            want = str(lo) if lo == hi else f"{lo} to {hi}"
            raise BadModelError(
                f"{self.what}: the caffemodel holds {len(arrays)} blobs, expected {want}"
            )
        return arrays

    def expect(self, array: np.ndarray, shape: Sequence[int], what: str) -> np.ndarray:
        """``array`` reshaped to ``shape``; legacy 4-D blobs with unit dims are accepted."""
        shape = tuple(int(d) for d in shape)
        squeeze = tuple(d for d in array.shape if d != 1)
        if array.shape == shape or (
            array.size == math.prod(shape) and squeeze == tuple(d for d in shape if d != 1)
        ):
            return array.reshape(shape)
        raise BadModelError(
            f"{self.what}: {what} blob has shape {list(array.shape)} in the caffemodel, "
            f"the prototxt needs {list(shape)}"
        )

    # -- emission --------------------------------------------------------------------
    def const(self, array: Any, hint: str, dtype: Any = np.float32) -> Value:
        name = self._net.unique(f"{self.layer.name}/{hint}", self._net.value_names)
        return Value(name, const=np.require(np.asarray(array, dtype=dtype), requirements="C"))

    def emit(
        self,
        op: str,
        inputs: Sequence[Value | None],
        attrs: dict[str, Any] | None = None,
        num_outputs: int = 1,
    ) -> list[Value]:
        net = self._net
        if self._named:
            node_name = net.unique(f"{self.name}/{op}", net.node_names)
        else:
            node_name, self._named = self.name, True
        outs = [
            Value(net.unique(f"{self.layer.name}/{op}_out", net.value_names))
            for _ in range(num_outputs)
        ]
        if not has_op(op):
            raise LayerProblem(f"the IR has no {op} op")
        node = Node(op, inputs, outs, attrs or {}, node_name)
        net.graph.append(node)
        _fill_types(node)
        return outs

    def emit1(self, op: str, inputs: Sequence[Value | None], **attrs: Any) -> Value:
        return self.emit(op, inputs, attrs)[0]

    def set_results(self, values: Sequence[Value]) -> None:
        self.results = list(values)


def _fill_types(node: Node) -> None:
    """Output dtype and shape from the op's declared inference."""
    infer = get_op(node.op).infer
    if infer is None:
        return
    try:
        results = infer(node)
    except Exception as exc:  # noqa: BLE001 - shapes are best effort; lowerings check them
        logger.debug("shape inference of %s failed: %s", node, exc)
        return
    for v, (dtype, shape) in zip(node.outputs, results, strict=False):
        v.dtype, v.shape = DataType(dtype), shape
