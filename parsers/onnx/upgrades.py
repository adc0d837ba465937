"""Per-op upgrades of old ONNX forms to the latest opset form the IR holds.

Each entry of :data:`UPGRADES` (keyed by ONNX op type, default domain only) receives the
node being lowered as a mutable :class:`OnnxNode` (attributes as plain Python values:
str, int, float, lists, np.ndarray; subgraphs still as GraphProto) and a
:class:`Builder`. It rewrites the node in place (attributes that became inputs turn into
constant Values, renamed ops, dropped legacy attributes) and returns False so default
lowering continues, or emits the replacement nodes itself and returns True.

Sources: the ONNX operator Changelog. Legacy ``consumed_inputs`` is dropped on every op.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import onnx

from ir import DataType, Value
from parsers.onnx.loader import elem_type_name

__all__ = ["UPGRADES", "Builder", "OnnxNode", "upgrade"]


@dataclass
class OnnxNode:
    """An ONNX node on its way into the IR."""

    op: str
    domain: str  # "ai.onnx" for the default domain
    name: str
    version: int  # opset version of the node's domain
    inputs: list[Value | None]
    attrs: dict[str, Any]
    outputs: list[Value]
    drop: set[str] = field(default_factory=set)  # attributes ignored without complaint

    def input(self, index: int) -> Value | None:
        return self.inputs[index] if index < len(self.inputs) else None

    def set_input(self, index: int, value: Value | None) -> None:
        while len(self.inputs) <= index:
            self.inputs.append(None)
        self.inputs[index] = value

    def pop(self, *names: str) -> Any:
        """Remove attributes; return the value of the first one present (or None)."""
        found = None
        for name in names:
            value = self.attrs.pop(name, None)
            if found is None:
                found = value
        return found


class Builder(Protocol):
    """What upgrades may do to the graph being built."""

    def const(self, array: np.ndarray, hint: str) -> Value: ...

    def emit(
        self,
        op: str,
        inputs: Sequence[Value | None],
        attrs: dict[str, Any] | None = None,
        outputs: Sequence[Value] | None = None,
        hint: str = "",
    ) -> list[Value]: ...

    def problem(self, message: str) -> None: ...


Upgrade = Callable[[OnnxNode, Builder], bool]


def _ints(n: OnnxNode, b: Builder, values: Sequence[int], what: str) -> Value:
    return b.const(np.asarray(list(values), dtype=np.int64), f"{n.name}_{what}")


def _float_like(n: OnnxNode, value: float, what: str, b: Builder, index: int = 0) -> Value:
    """A scalar constant with the dtype of input ``index`` (float32 when unknown)."""
    x = n.input(index)
    dtype = x.dtype.numpy if x is not None and x.dtype != DataType.UNDEFINED else np.float32
    return b.const(np.asarray(value, dtype=dtype), f"{n.name}_{what}")


def _attr_to_input(
    name: str, index: int, before: int, kind: str = "ints", attr_names: Sequence[str] = ()
) -> Upgrade:
    """Move attribute ``name`` (or an older alias) to input ``index`` for opset < before."""

    def run(n: OnnxNode, b: Builder) -> bool:
        if n.version >= before:
            return False
        value = n.pop(name, *attr_names)
        if value is not None:
            if kind == "ints":
                n.set_input(index, _ints(n, b, value, name))
            elif kind == "int":
                n.set_input(index, _ints(n, b, [value], name))
            else:
                n.set_input(index, _float_like(n, value, name, b))
        return False

    return run


def _drop(*names: str, before: int = 10**6) -> Upgrade:
    def run(n: OnnxNode, b: Builder) -> bool:
        if n.version < before:
            n.pop(*names)
        return False

    return run


# -- op-specific upgrades ------------------------------------------------------


def _split(n: OnnxNode, b: Builder) -> bool:
    if n.version < 13:
        split = n.pop("split")
        if split is not None:
            n.inputs[1:] = [_ints(n, b, split, "split")]
    if n.version < 18 and n.input(1) is None and "num_outputs" not in n.attrs:
        n.attrs["num_outputs"] = len(n.outputs)
    return False


def _slice(n: OnnxNode, b: Builder) -> bool:
    if n.version >= 10:
        return False
    starts, ends, axes = n.pop("starts"), n.pop("ends"), n.pop("axes")
    n.inputs[1:] = [_ints(n, b, starts or [], "starts"), _ints(n, b, ends or [], "ends")]
    if axes is not None:
        n.inputs.append(_ints(n, b, axes, "axes"))
    return False


def _pad(n: OnnxNode, b: Builder) -> bool:
    if n.version >= 11:
        return False
    pads = n.pop("pads", "paddings")
    value = n.pop("value")
    n.inputs[1:] = [_ints(n, b, pads or [], "pads")]
    if value is not None and value != 0.0:
        n.inputs.append(_float_like(n, value, "value", b))
    return False


def _clip(n: OnnxNode, b: Builder) -> bool:
    if n.version >= 11:
        return False
    lo, hi = n.pop("min"), n.pop("max")
    n.inputs[1:] = [
        None if lo is None else _float_like(n, lo, "min", b),
        None if hi is None else _float_like(n, hi, "max", b),
    ]
    while n.inputs and n.inputs[-1] is None:
        n.inputs.pop()
    return False


def _softmax_like(n: OnnxNode, b: Builder) -> bool:
    """Opset < 13: coerce to 2-D at ``axis`` (default 1), normalise, reshape back."""
    if n.version >= 13:
        return False
    axis = int(n.pop("axis") if "axis" in n.attrs else 1)
    x = n.inputs[0]
    assert x is not None
    rank = x.rank
    if rank is not None and (axis if axis >= 0 else axis + rank) == rank - 1:
        n.attrs["axis"] = -1
        return False
    flat = b.emit("Flatten", [x], {"axis": axis}, hint=f"{n.name}_flat")[0]
    norm = b.emit(n.op, [flat], {"axis": -1}, hint=n.name)[0]
    if x.is_static:
        shape = _ints(n, b, x.shape or (), "shape")  # type: ignore[arg-type]
    else:
        shape = b.emit("Shape", [x], {}, hint=f"{n.name}_shape")[0]
    b.emit("Reshape", [norm, shape], {}, outputs=n.outputs, hint=f"{n.name}_reshape")
    return True


def _cast(n: OnnxNode, b: Builder) -> bool:
    to = n.attrs.get("to")
    if isinstance(to, str):
        try:
            n.attrs["to"] = to = int(onnx.TensorProto.DataType.Value(to.upper()))
        except ValueError:
            b.problem(f"node {n.name!r} (Cast): unknown target type {to!r}")
            return False
    if isinstance(to, int) and to not in DataType._value2member_map_:
        b.problem(f"node {n.name!r} (Cast): target type {elem_type_name(to)} is not supported")
    return False


def _upsample(n: OnnxNode, b: Builder) -> bool:
    """Upsample (all versions) -> Resize with asymmetric coordinates."""
    if n.version < 7:
        scales: Any = [1.0, 1.0, n.pop("height_scale") or 1.0, n.pop("width_scale") or 1.0]
    else:
        scales = n.pop("scales")
    scale_value = (
        n.input(1)
        if scales is None
        else b.const(np.asarray(scales, np.float32), f"{n.name}_scales")
    )
    n.op = "Resize"
    n.version = 10
    n.inputs[1:] = [scale_value]
    return _resize(n, b)


def _resize(n: OnnxNode, b: Builder) -> bool:
    if n.version < 11:  # inputs X, scales; asymmetric coordinates
        scales = n.input(1)
        mode = n.attrs.get("mode", "nearest")
        n.attrs["mode"] = "linear" if mode in ("bilinear", "linear") else mode
        n.attrs["coordinate_transformation_mode"] = "asymmetric"
        if n.attrs["mode"] == "nearest":
            down = (
                scales is not None and scales.const is not None and bool(np.all(scales.const <= 1))
            )
            n.attrs["nearest_mode"] = "ceil" if down else "floor"
        n.inputs[1:] = [None, scales]
        return False
    for index in (1, 2):  # opset 11/13: empty roi / scales mean "absent"
        v = n.input(index)
        if v is not None and v.const is not None and v.const.size == 0:
            n.inputs[index] = None
    if n.attrs.get("coordinate_transformation_mode") == "tf_half_pixel_for_nn":
        b.problem(
            f"node {n.name!r} (Resize): coordinate mode 'tf_half_pixel_for_nn' is not in "
            "the latest ONNX Resize"
        )
    while n.inputs and n.inputs[-1] is None:
        n.inputs.pop()
    return False


def _dropout(n: OnnxNode, b: Builder) -> bool:
    n.pop("is_test")
    if n.version < 12:
        ratio = n.pop("ratio")
        if ratio is not None:
            n.inputs[1:] = [_float_like(n, ratio, "ratio", b)]
    return False


def _legacy_broadcast(n: OnnxNode, b: Builder) -> bool:
    """Opset < 7 binary ops: ``broadcast=1, axis=k`` aligns B to A starting at dim k."""
    if n.version >= 7:
        return False
    bcast, axis = n.pop("broadcast"), n.pop("axis")
    a, bv = n.input(0), n.input(1)
    if not bcast or axis is None or a is None or bv is None:
        return False
    if a.rank is None or bv.rank is None:
        b.problem(f"node {n.name!r} ({n.op}): legacy broadcast with axis needs known ranks")
        return False
    ax = axis if axis >= 0 else axis + a.rank
    trailing = a.rank - ax - bv.rank
    if trailing > 0:
        axes = _ints(n, b, range(bv.rank, bv.rank + trailing), "axes")
        n.inputs[1] = b.emit("Unsqueeze", [bv, axes], {}, hint=f"{n.name}_align")[0]
    return False


def _batch_norm(n: OnnxNode, b: Builder) -> bool:
    spatial = n.pop("spatial")
    n.pop("is_test")
    n.drop.add("momentum")  # ignored when the IR does not declare it
    if spatial == 0:
        b.problem(f"node {n.name!r} (BatchNormalization): spatial=0 is not supported")
    if n.version < 14 and len(n.outputs) > 1:
        b.problem(
            f"node {n.name!r} (BatchNormalization-{n.version}): training outputs are not supported"
        )
    return False


def _concat(n: OnnxNode, b: Builder) -> bool:
    if n.version < 4 and "axis" not in n.attrs:
        n.attrs["axis"] = 1
    return False


def _lp_pool(n: OnnxNode, b: Builder) -> bool:
    if "p" in n.attrs:
        n.attrs["p"] = int(n.attrs["p"])
    return False


def _reshape(n: OnnxNode, b: Builder) -> bool:
    shape = n.pop("shape")
    if n.version < 5 and shape is not None:
        n.inputs[1:] = [_ints(n, b, shape, "shape")]
    return False


def _tile(n: OnnxNode, b: Builder) -> bool:
    if n.version >= 6 or len(n.inputs) < 3:
        return False
    x, tiles, axis = n.inputs[:3]
    if (
        x is None
        or x.rank is None
        or tiles is None
        or tiles.const is None
        or axis is None
        or (axis.const is None)
    ):
        b.problem(f"node {n.name!r} (Tile-1): needs a known rank and constant tiles/axis")
        return False
    repeats = [1] * x.rank
    repeats[int(axis.const.reshape(-1)[0])] = int(tiles.const.reshape(-1)[0])
    n.inputs[1:] = [_ints(n, b, repeats, "repeats")]
    return False


def _scatter(n: OnnxNode, b: Builder) -> bool:
    n.op = "ScatterElements"
    return False


def _group_norm(n: OnnxNode, b: Builder) -> bool:
    """Opset 18 scale/bias are per group; 21 has them per channel."""
    if n.version >= 21:
        return False
    x, groups = n.input(0), n.attrs.get("num_groups")
    channels = x.shape[1] if x is not None and x.shape is not None and len(x.shape) > 1 else None
    for index, what in ((1, "scale"), (2, "bias")):
        v = n.input(index)
        if v is None or v.const is None or not isinstance(channels, int) or not groups:
            b.problem(
                f"node {n.name!r} (GroupNormalization-18): needs constant {what} and "
                "a known channel count"
            )
            return False
        n.inputs[index] = b.const(np.repeat(v.const, channels // groups), f"{n.name}_{what}")
    return False


def _dft(n: OnnxNode, b: Builder) -> bool:
    if n.version < 20:
        axis = n.pop("axis")
        value = np.asarray(1 if axis is None else axis, np.int64)
        n.set_input(2, b.const(value, f"{n.name}_axis"))
    return False


def _scan(n: OnnxNode, b: Builder) -> bool:
    if n.version < 9:
        b.problem(f"node {n.name!r}: Scan-8 (batched, with sequence_lens) is not supported")
    return False


_REDUCE_18 = (
    "ReduceMax ReduceMin ReduceMean ReduceProd ReduceL1 ReduceL2 ReduceLogSum "
    "ReduceLogSumExp ReduceSumSquare"
).split()
_LEGACY_BROADCAST = "Add Sub Mul Div Pow And Or Xor Equal Greater Less".split()

UPGRADES: dict[str, Upgrade] = {
    "Split": _split,
    "Slice": _slice,
    "Pad": _pad,
    "Clip": _clip,
    "ReduceSum": _attr_to_input("axes", 1, 13),
    **{op: _attr_to_input("axes", 1, 18) for op in _REDUCE_18},
    "Squeeze": _attr_to_input("axes", 1, 13),
    "Unsqueeze": _attr_to_input("axes", 1, 13),
    "TopK": _attr_to_input("k", 1, 10, kind="int"),
    "Upsample": _upsample,
    "Resize": _resize,
    "BatchNormalization": _batch_norm,
    "Dropout": _dropout,
    "Softmax": _softmax_like,
    "LogSoftmax": _softmax_like,
    "Hardmax": _softmax_like,
    "Cast": _cast,
    "Gemm": _drop("broadcast", before=7),
    **{op: _legacy_broadcast for op in _LEGACY_BROADCAST},
    "Concat": _concat,
    "LpPool": _lp_pool,
    "GlobalLpPool": _lp_pool,
    "Reshape": _reshape,
    "Tile": _tile,
    "Scatter": _scatter,
    "GroupNormalization": _group_norm,
    "DFT": _dft,
    "Scan": _scan,
    "RNN": _drop("output_sequence", before=7),
    "GRU": _drop("output_sequence", before=7),
    "LSTM": _drop("output_sequence", before=7),
}


def upgrade(n: OnnxNode, b: Builder) -> bool:
    """Apply the upgrade for ``n`` (default domain only); True when it emitted the node."""
    n.pop("consumed_inputs")
    if n.domain != "ai.onnx":
        return False
    fn = UPGRADES.get(n.op)
    return False if fn is None else fn(n, b)
