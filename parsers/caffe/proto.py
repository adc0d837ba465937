"""Caffe protobuf messages without importing generated ``*_pb2`` code.

The message classes come from the serialized ``FileDescriptorProto`` embedded in
caffe2onnx's generated ``caffe_upsample_pb2.py`` (BVLC caffe.proto plus the common
extensions: Upsample, Interp, Permute, ReLU6, PriorBox, ...). That file is read as
data (parsed with :mod:`ast`, never imported: its generated code needs the slow
pure-Python protobuf backend), the descriptor is added to a private
``DescriptorPool`` and classes are built with ``message_factory.GetMessageClass``.

- :func:`read_prototxt`: text ``NetParameter`` (syntax errors -> BadModelError with
  line and column);
- :func:`read_caffemodel`: binary ``NetParameter`` with the trained blobs.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import os
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from google.protobuf.message import DecodeError

from parsers.errors import BadModelError, UnsupportedModelError

__all__ = ["caffe_message", "read_caffemodel", "read_prototxt"]

_GENERATED = ("caffe2onnx", "proto/caffe_upsample_pb2.py")


@functools.cache
def _pool() -> descriptor_pool.DescriptorPool:
    spec = importlib.util.find_spec(_GENERATED[0])
    if spec is None or spec.origin is None:
        raise UnsupportedModelError(
            "reading Caffe models needs caffe.proto from the caffe2onnx package "
            "(pip install caffe2onnx)"
        )
    source = Path(spec.origin).parent / _GENERATED[1]
    fdp = descriptor_pb2.FileDescriptorProto.FromString(_serialized_pb(source))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return pool


def _serialized_pb(path: Path) -> bytes:
    """The ``serialized_pb=b'...'`` literal of a protoc-generated module, read as data."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "serialized_pb":
            value = ast.literal_eval(node.value)
            if isinstance(value, bytes):
                return value
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", "") == "AddSerializedFile"
            and node.args
        ):
            value = ast.literal_eval(node.args[0])
            if isinstance(value, bytes):
                return value
    raise UnsupportedModelError(f"no serialized caffe.proto descriptor found in {path}")


@functools.cache
def caffe_message(name: str) -> Any:
    """The message class ``caffe.<name>`` (e.g. ``NetParameter``, ``BlobProto``)."""
    return message_factory.GetMessageClass(_pool().FindMessageTypeByName(f"caffe.{name}"))


def read_prototxt(path: str | os.PathLike) -> Any:
    """Parse a text ``.prototxt`` into a ``caffe.NetParameter``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadModelError(f"{p}: cannot read the prototxt ({exc})") from None
    net = caffe_message("NetParameter")()
    try:
        text_format.Parse(text, net, allow_unknown_field=False)
    except text_format.ParseError as exc:
        where = f"line {exc.GetLine()}, column {exc.GetColumn()}" if exc.GetLine() else ""
        msg = str(exc).split(" : ", 1)[-1] if where else str(exc)
        raise BadModelError(f"{p}: prototxt syntax error at {where}: {msg}") from None
    return net


def read_caffemodel(path: str | os.PathLike) -> Any:
    """Parse a binary ``.caffemodel`` into a ``caffe.NetParameter``."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise BadModelError(f"{p}: cannot read the caffemodel ({exc})") from None
    net = caffe_message("NetParameter")()
    try:
        net.ParseFromString(data)
    except DecodeError as exc:
        raise BadModelError(f"{p}: not a binary Caffe NetParameter ({exc})") from None
    return net
