"""TensorFlow reference: run the source model with TensorFlow on the CPU.

- SavedModel folder: its ``serving_default`` signature is called with the feeds as
  keyword arguments; results are keyed by the signature's output names.
- Frozen ``.pb``: the GraphDef is imported and run in a v1 session, feeding the
  Placeholders by node name and fetching the tensors of the nodes nobody reads, named
  ``node`` (output 0) / ``node:k`` -- the same inputs and outputs parsers.tf gives the IR.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from converter.errors import ConvertError

__all__ = ["run", "run_all"]

logger = logging.getLogger(__name__)


def run(
    source: str | Path, feeds: Mapping[str, np.ndarray], threads: int = 2, **_: Any
) -> dict[str, np.ndarray]:
    try:
        from parsers.tf.loader import import_tf
    except ImportError:  # pragma: no cover - depends on the install
        raise ConvertError("verification needs tensorflow: pip install tensorflow-cpu") from None
    tf = import_tf()
    _set_threads(tf, threads)
    p = Path(source)
    from parsers.tf.loader import is_saved_model

    if is_saved_model(p):
        return _run_saved_model(p if p.is_dir() else p.parent, feeds)
    return _run_frozen(p, feeds)


def _set_threads(tf: Any, threads: int) -> None:
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already initialized in this process
        pass


def _run_saved_model(folder: Path, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    from parsers.tf.loader import import_tf, load_signature, signature_inputs

    tf = import_tf()
    loaded, fn = load_signature(folder)
    kwargs = {}
    for name, spec in signature_inputs(fn):
        if name not in feeds:
            raise ConvertError(f"reference: no data for signature input {name!r}")
        kwargs[name] = tf.constant(np.asarray(feeds[name]), dtype=spec.dtype)
    result = fn(**kwargs)
    del loaded
    if isinstance(result, Mapping):
        return {str(k): np.asarray(v) for k, v in result.items()}
    flat = tf.nest.flatten(result)
    return {f"output_{i}": np.asarray(v) for i, v in enumerate(flat)}


def _run_frozen(path: Path, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    from parsers.tf.loader import frozen_outputs, import_tf

    tf = import_tf()
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(path.read_bytes())
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    fetches = frozen_outputs(graph_def, graph)
    placeholders = [n.name for n in graph_def.node if n.op == "Placeholder"]
    feed_dict = {}
    for name in placeholders:
        if name not in feeds:
            raise ConvertError(f"reference: no data for placeholder {name!r}")
        feed_dict[graph.get_tensor_by_name(f"{name}:0")] = np.asarray(feeds[name])
    tensors = [graph.get_tensor_by_name(f"{node}:{k}") for node, k, _ in fetches]
    with tf.compat.v1.Session(graph=graph) as sess:
        values = sess.run(tensors, feed_dict=feed_dict)
    return {name: np.asarray(v) for (_, _, name), v in zip(fetches, values, strict=True)}


def run_all(
    source: str | Path,
    feeds: Mapping[str, np.ndarray],
    threads: int = 2,
    max_tensor_bytes: int | None = None,
    **_: Any,
) -> dict[str, np.ndarray]:
    """Every tensor of the (frozen) main graph by the names parsers.tf gives them.

    The model is frozen as the front end freezes it (``parsers.tf.loader``) and run
    once in a v1 session fetching the outputs of every node but constants, named
    ``node`` (output 0) / ``node:k``; the graph outputs also under their IR names
    (a SavedModel's signature names). Tensors inside control-flow frames or function
    bodies are not reported; tensors of statically known size over ``max_tensor_bytes``
    are left out. Numeric tensors only.
    """
    try:
        from parsers.tf.loader import import_tf, load_tf_model, tensor_ref
    except ImportError:  # pragma: no cover - depends on the install
        raise ConvertError("verification needs tensorflow: pip install tensorflow-cpu") from None
    tf = import_tf()
    _set_threads(tf, threads)
    model = load_tf_model(source)
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(model.graph_def, name="")
    feed_dict = {}
    for placeholder, name in model.inputs:
        if name not in feeds:
            raise ConvertError(f"reference: no data for input {name!r}")
        feed_dict[graph.get_tensor_by_name(f"{placeholder}:0")] = np.asarray(feeds[name])
    fetch: dict[str, Any] = {}
    for op in graph.get_operations():
        if op.type in _NOT_FETCHED or op.type in _FRAME_OPS:
            continue
        if getattr(op, "_control_flow_context", None) is not None:
            continue  # inside a v1 loop/cond frame
        for k, t in enumerate(op.outputs):
            if _fetchable(graph, t, max_tensor_bytes):
                fetch[op.name if k == 0 else f"{op.name}:{k}"] = t
    for ref, name in model.outputs:
        node, k = tensor_ref(ref)
        fetch[name] = graph.get_tensor_by_name(f"{node}:{k}")
    outputs = {name: fetch[name] for _, name in model.outputs}
    with tf.compat.v1.Session(graph=graph) as sess:
        try:
            values = sess.run(fetch, feed_dict=feed_dict)
        except (tf.errors.OpError, ValueError, TypeError) as exc:
            logger.warning("TF reference: intermediates not fetchable (%s); outputs only", exc)
            values = sess.run(outputs, feed_dict=feed_dict)
    return {name: np.asarray(v) for name, v in values.items()}


_NOT_FETCHED = {"Const", "Placeholder", "NoOp", "Assert"}
# v1 control flow: tensors inside a loop frame cannot be fetched from outside it
_FRAME_OPS = {"Enter", "Exit", "NextIteration", "Switch", "Merge", "LoopCond"}


def _fetchable(graph: Any, tensor: Any, max_bytes: int | None) -> bool:
    if not graph.is_fetchable(tensor) or not tensor.dtype.is_numpy_compatible:
        return False
    if tensor.dtype.name in ("resource", "variant", "string"):
        return False
    if max_bytes is not None and tensor.shape.is_fully_defined():
        size = int(np.prod(tensor.shape.as_list(), dtype=np.int64)) * tensor.dtype.size
        return size <= max_bytes
    return True
