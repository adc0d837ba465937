"""What a per-op lowering sees: :class:`OpContext` (the TF node, its input values, a way
to emit IR nodes) and the helpers every lowering table shares.

A lowering is ``fn(ctx) -> Value | TensorList | Sequence[Value | TensorList]``: one result
per TF output, in order. It refuses a node it cannot express with ``ctx.fail(reason)``;
the front end collects the reason and goes on, so one run reports every problem.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from ir import DataType, Value

if TYPE_CHECKING:
    from parsers.tf.lower import Builder

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "Lowering",
    "OpContext",
    "Refused",
    "TensorList",
    "attr_value",
    "tf_dtype",
]

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min
_MISSING = object()


class Refused(Exception):
    """A lowering cannot express this node; the message says why (one sentence)."""


@dataclass
class TensorList:
    """A TF TensorList (TensorArray v2) held as its stacked tensor when one is known."""

    tensor: Value | None
    dtype: DataType = DataType.UNDEFINED


def tf_dtype(enum_value: int) -> DataType:
    """TensorFlow ``DataType`` enum -> IR DataType (UNDEFINED when there is none)."""
    from parsers.tf.loader import import_tf

    tf = import_tf()
    try:
        dt = tf.dtypes.as_dtype(int(enum_value))
        if dt == tf.string:
            return DataType.STRING
        if dt == tf.bfloat16:
            return DataType.BFLOAT16
        return DataType.from_numpy(np.dtype(dt.as_numpy_dtype))
    except (TypeError, ValueError, KeyError):
        return DataType.UNDEFINED


def attr_value(a: Any) -> Any:
    """A TF ``AttrValue`` as a plain Python value (types as DataType, tensors as arrays)."""
    kind = a.WhichOneof("value")
    if kind is None:
        return None
    if kind == "s":
        return a.s.decode("utf-8", "replace")
    if kind in ("i", "f", "b"):
        return getattr(a, kind)
    if kind == "type":
        return tf_dtype(a.type)
    if kind == "shape":
        return _shape(a.shape)
    if kind == "tensor":
        from parsers.tf.loader import import_tf

        return import_tf().make_ndarray(a.tensor)
    if kind == "func":
        return a.func.name
    if kind == "list":
        lv = a.list
        for field in ("i", "f", "b", "s", "type", "shape", "func", "tensor"):
            items = getattr(lv, field)
            if len(items):
                if field == "s":
                    return [x.decode("utf-8", "replace") for x in items]
                if field == "type":
                    return [tf_dtype(x) for x in items]
                if field == "shape":
                    return [_shape(x) for x in items]
                if field == "func":
                    return [x.name for x in items]
                return list(items)
        return []
    return None


def _shape(shape: Any) -> list[int | None] | None:
    if shape.unknown_rank:
        return None
    return [None if d.size < 0 else int(d.size) for d in shape.dim]


class OpContext:
    """One TF node being lowered."""

    def __init__(self, builder: Builder, node: Any, inputs: Sequence[Any]) -> None:
        self.b = builder
        self.node = node
        self.name: str = node.name
        self.op: str = node.op
        self.inputs: list[Any] = list(inputs)

    # -- reading the node ---------------------------------------------------------
    def attr(self, key: str, default: Any = _MISSING) -> Any:
        if key in self.node.attr:
            return attr_value(self.node.attr[key])
        if default is _MISSING:
            self.fail(f"attribute {key!r} is missing")
        return default

    def x(self, i: int) -> Value:
        """Input ``i`` as a tensor Value."""
        if i >= len(self.inputs):
            self.fail(f"input {i} is missing")
        v = self.inputs[i]
        if isinstance(v, TensorList):
            self.fail(f"input {i} is a TensorList, which the IR has no type for")
        return v

    def const_of(self, i: int) -> np.ndarray | None:
        """The constant array behind input ``i``, or None when it is computed."""
        v = self.inputs[i] if i < len(self.inputs) else None
        return v.const if isinstance(v, Value) else None

    def need_const(self, i: int, what: str) -> np.ndarray:
        arr = self.const_of(i)
        if arr is None:
            self.fail(f"{what} (input {i}) must be a constant")
        return arr

    def rank(self, i: int) -> int | None:
        v = self.x(i)
        return v.rank

    def need_rank(self, i: int) -> int:
        r = self.rank(i)
        if r is None:
            self.fail(f"input {i} needs a known rank")
        return r

    def shape(self, i: int) -> tuple[Any, ...] | None:
        return self.x(i).shape

    def fail(self, reason: str) -> NoReturn:
        raise Refused(f"node {self.name!r} ({self.op}): {reason}")

    # -- building ---------------------------------------------------------------------
    def op_(self, op: str, inputs: Sequence[Value | None], n_out: int = 1, **attrs: Any) -> Any:
        """Emit one IR node; its single output Value (or the list when ``n_out`` > 1)."""
        outs = self.b.emit(op, inputs, {k: v for k, v in attrs.items() if v is not None},
                           n_out=n_out, hint=self.name)  # fmt: skip
        return outs[0] if n_out == 1 else outs

    def const(self, array: Any, hint: str = "") -> Value:
        return self.b.const(np.asarray(array), hint or f"{self.name}/const")

    def i64(self, values: Any) -> Value:
        return self.const(np.asarray(values, dtype=np.int64))

    def scalar_like(self, value: float, like: Value) -> Value:
        dt = like.dtype.numpy if like.dtype != DataType.UNDEFINED else np.float32
        return self.const(np.asarray(value, dtype=dt))

    def as_i64(self, v: Value) -> Value:
        """``v`` as int64 (folded when constant)."""
        if v.const is not None:
            return self.i64(v.const)
        if v.dtype == DataType.INT64:
            return v
        return self.op_("Cast", [v], to=int(DataType.INT64))


Lowering = Callable[[OpContext], Any]
