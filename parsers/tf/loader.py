"""Reading TensorFlow models: frozen GraphDef ``.pb`` files and SavedModel folders.

Both end as one :class:`TfModel`: a GraphDef whose variables are constants (its function
library kept for control flow), the graph's feeds and fetches, and the names the IR
graph's inputs and outputs take.

- SavedModel folder: the ``serving_default`` signature is frozen with TensorFlow's
  ``convert_variables_to_constants_v2`` (control flow kept as While/If with function
  bodies). Inputs are named by the signature's input names, outputs by its structured
  output names (``output_0``, a Keras layer name, ...) -- the names
  ``signature(**feeds)`` returns, which :mod:`converter.reference.tf` compares with.
- Frozen ``.pb``: a GraphDef with Placeholders. Inputs are the Placeholder node names;
  outputs are the tensors of every node nobody reads, through data or control edges
  (Const, Placeholder, NoOp and ops without outputs excepted), named ``node`` for
  output 0 and ``node:k`` for output k > 0. The frozen variables of a TF 2 function
  (``.../ReadVariableOp``) are read by its final NoOp, so they are not outputs.

``saved_model.pb`` given as a file means its folder. TensorFlow is imported lazily (it
takes seconds) with its C++ logging silenced.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parsers.errors import BadModelError, InputShapeError

__all__ = [
    "TfModel",
    "frozen_outputs",
    "import_tf",
    "load_tf_model",
    "load_signature",
    "tensor_ref",
]

_NOT_OUTPUTS = {"NoOp", "Const", "Assert", "Placeholder", "PlaceholderWithDefault"}


@dataclass
class TfModel:
    """A frozen TensorFlow graph ready for lowering."""

    graph_def: Any  # tensorflow GraphDef
    inputs: list[tuple[str, str]]  # (Placeholder node name, IR input name)
    outputs: list[tuple[str, str]]  # (tensor "node:k", IR output name)
    source: str
    kind: str  # "saved_model" or "frozen"
    input_shapes: dict[str, list[int | None] | None] = field(default_factory=dict)


def import_tf() -> Any:
    """``tensorflow``, imported with its C++ start-up chatter silenced."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    return tf


def tensor_ref(name: str) -> tuple[str, int]:
    """``"node:1"`` -> ("node", 1); ``"node"`` -> ("node", 0)."""
    node, sep, index = name.rpartition(":")
    if sep and index.isdigit():
        return node, int(index)
    return name, 0


def is_saved_model(path: Path) -> bool:
    return path.is_dir() or path.name == "saved_model.pb"


def load_tf_model(path: str | os.PathLike) -> TfModel:
    """Load and freeze a SavedModel folder or read a frozen ``.pb``."""
    p = Path(path)
    if not p.exists():
        raise BadModelError(f"model not found: {p}")
    if is_saved_model(p):
        return _load_saved_model(p if p.is_dir() else p.parent)
    return _load_frozen(p)


# -- SavedModel ---------------------------------------------------------------------
def load_signature(folder: Path) -> tuple[Any, Any]:
    """(loaded object, its ``serving_default`` function) of a SavedModel folder.

    Keep the loaded object alive while calling the function: it owns the variables.
    """
    if not (folder / "saved_model.pb").exists() and not (folder / "saved_model.pbtxt").exists():
        raise BadModelError(f"{folder}: not a SavedModel folder (no saved_model.pb)")
    tf = import_tf()
    try:
        loaded = tf.saved_model.load(str(folder))
    except Exception as exc:  # noqa: BLE001 - TF raises many types for broken folders
        raise BadModelError(f"{folder}: cannot load SavedModel ({_first_line(exc)})") from None
    signatures = dict(getattr(loaded, "signatures", {}) or {})
    if "serving_default" not in signatures:
        names = ", ".join(sorted(signatures)) or "none"
        raise BadModelError(
            f"{folder}: SavedModel has no 'serving_default' signature (signatures: {names})"
        )
    return loaded, signatures["serving_default"]


def _load_saved_model(folder: Path) -> TfModel:
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    loaded, fn = load_signature(folder)
    try:
        frozen = convert_variables_to_constants_v2(fn, lower_control_flow=False)
    except Exception as exc:  # noqa: BLE001
        raise BadModelError(
            f"{folder}: cannot freeze serving_default ({_first_line(exc)})"
        ) from None
    graph_def = frozen.graph.as_graph_def()
    specs = signature_inputs(fn)
    placeholders = [t.op.name for t in frozen.inputs]
    if len(placeholders) != len(specs):
        raise BadModelError(
            f"{folder}: serving_default has {len(specs)} inputs but its graph "
            f"{len(placeholders)} placeholders"
        )
    inputs = list(zip(placeholders, [name for name, _ in specs], strict=True))
    shapes = {name: _spec_shape(spec) for name, spec in specs}
    out_names = signature_output_names(fn)
    fetched = [t.name for t in frozen.outputs]
    if len(out_names) != len(fetched):
        raise BadModelError(f"{folder}: serving_default outputs do not match its graph")
    outputs = [(_canonical(ref), name) for ref, name in zip(fetched, out_names, strict=True)]
    del loaded
    return TfModel(graph_def, inputs, outputs, str(folder), "saved_model", shapes)


def signature_inputs(fn: Any) -> list[tuple[str, Any]]:
    """(name, TensorSpec) of a signature function's inputs in flattened order."""
    tf = import_tf()
    args, kwargs = fn.structured_input_signature
    specs: list[tuple[str, Any]] = []
    for i, spec in enumerate(tf.nest.flatten(args)):
        specs.append((getattr(spec, "name", None) or f"input_{i}", spec))
    for key in sorted(kwargs):
        for spec in tf.nest.flatten(kwargs[key]):
            specs.append((key, spec))
    return specs


def signature_output_names(fn: Any) -> list[str]:
    """Names of a signature function's outputs in flattened order."""
    tf = import_tf()
    structured = fn.structured_outputs
    if isinstance(structured, Mapping):
        return [str(k) for k in sorted(structured)]
    flat = tf.nest.flatten(structured)
    return [f"output_{i}" for i in range(len(flat))]


def _spec_shape(spec: Any) -> list[int | None] | None:
    shape = getattr(spec, "shape", None)
    if shape is None or shape.rank is None:
        return None
    return [None if d is None else int(d) for d in shape.as_list()]


def _canonical(ref: str) -> str:
    node, index = tensor_ref(ref)
    return f"{node}:{index}"


# -- frozen GraphDef --------------------------------------------------------------------
def _load_frozen(path: Path) -> TfModel:
    tf = import_tf()
    from google.protobuf.message import DecodeError

    data = path.read_bytes()
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(data)
    except DecodeError as exc:
        raise BadModelError(f"{path}: not a TensorFlow GraphDef ({exc})") from None
    if not graph_def.node:
        raise BadModelError(f"{path}: GraphDef has no nodes (not a frozen TensorFlow graph)")
    graph = _import(graph_def, str(path))
    placeholders = [n for n in graph_def.node if n.op == "Placeholder"]
    inputs = [(n.name, n.name) for n in placeholders]
    shapes = {n.name: _attr_shape(n) for n in placeholders}
    outputs = [(f"{node}:{k}", name) for node, k, name in frozen_outputs(graph_def, graph)]
    if not outputs:
        raise BadModelError(f"{path}: GraphDef has no output (every node's result is read)")
    return TfModel(graph_def, inputs, outputs, str(path), "frozen", shapes)


def _import(graph_def: Any, source: str) -> Any:
    """Import into a fresh tf.Graph: TensorFlow's own check that the GraphDef is whole."""
    tf = import_tf()
    graph = tf.Graph()
    try:
        with graph.as_default():
            tf.graph_util.import_graph_def(graph_def, name="")
    except Exception as exc:  # noqa: BLE001 - ValueError, InvalidArgumentError, ...
        raise BadModelError(f"{source}: invalid GraphDef ({_first_line(exc)})") from None
    return graph


def frozen_outputs(graph_def: Any, graph: Any) -> list[tuple[str, int, str]]:
    """(node, output index, output name) for every tensor of a node nobody reads.

    A control edge counts as a read; see the module docstring.
    """
    read: set[str] = set()
    for node in graph_def.node:
        for ref in node.input:
            read.add(tensor_ref(ref.lstrip("^"))[0])
    found = []
    for node in graph_def.node:
        if node.name in read or node.op in _NOT_OUTPUTS:
            continue
        op = graph.get_operation_by_name(node.name)
        for k in range(len(op.outputs)):
            found.append((node.name, k, node.name if k == 0 else f"{node.name}:{k}"))
    return found


def _attr_shape(node: Any) -> list[int | None] | None:
    shape = node.attr["shape"].shape if "shape" in node.attr else None
    if shape is None or shape.unknown_rank:
        return None
    return [None if d.size < 0 else int(d.size) for d in shape.dim]


def pin_shapes(
    model: TfModel, input_shapes: Mapping[str, Sequence[int | str | None]] | None
) -> dict[str, list[int | str | None] | None]:
    """Model input shapes with the user's ``input_shapes`` applied (checked)."""
    shapes: dict[str, list[int | str | None] | None] = {
        k: None if v is None else list(v) for k, v in model.input_shapes.items()
    }
    for name, dims in (input_shapes or {}).items():
        if name not in shapes:
            valid = ", ".join(shapes) or "none"
            raise InputShapeError(
                f"{model.source}: no model input named {name!r} (inputs: {valid})"
            )
        known = shapes[name]
        if known is not None and len(known) != len(dims):
            raise InputShapeError(
                f"{model.source}: input {name!r} has rank {len(known)}, got shape {list(dims)}"
            )
        if known is not None:
            for i, (have, want) in enumerate(zip(known, dims, strict=True)):
                if isinstance(have, int) and isinstance(want, int) and have != want:
                    raise InputShapeError(
                        f"{model.source}: input {name!r} dim {i} is {have}, cannot pin to {want}"
                    )
        shapes[name] = list(dims)
    return shapes


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
