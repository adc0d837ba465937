"""Declarations and shape inference of the NN ops (symbolic and unknown dims included)."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx.defs
import pytest

import ir
from ir import DataType, Trait
from ir.ops import nn
from ir.ops.nn import conv_transpose_geometry, pool_out_size, resolve_pads

F = DataType.FLOAT


def infer(op: str, shapes: list[Any], attrs: dict[str, Any] | None = None, n_out: int = 1,
          consts: dict[int, np.ndarray] | None = None) -> list[tuple[DataType, Any]]:
    """Run op's infer fn on a node whose inputs have ``shapes`` (None entry = omitted input)."""
    consts = consts or {}
    values: list[ir.Value | None] = []
    for i, shape in enumerate(shapes):
        if i in consts:
            values.append(ir.Value(f"i{i}", const=consts[i]))
        elif shape == "omit":
            values.append(None)
        else:
            values.append(ir.Value(f"i{i}", F, shape))
    node = ir.Node(op, values, n_out, attrs or {})
    return ir.get_op(op).infer(node)


def shape_of(op: str, shapes: list[Any], attrs: dict[str, Any] | None = None, **kw: Any) -> Any:
    return infer(op, shapes, attrs, **kw)[0][1]


def test_every_op_follows_the_onnx_schema() -> None:
    """Names, attributes and inputs/outputs match onnx's latest schema (plus ``format``)."""
    for opdef in nn.OPS:
        schema = onnx.defs.get_schema(opdef.name)
        assert set(opdef.attrs) - {"format"} == set(schema.attributes), opdef.name
        names = [i.rstrip("?*") for i in opdef.inputs]
        assert names == [i.name for i in schema.inputs], opdef.name
        assert [o.rstrip("?*") for o in opdef.outputs] == [o.name for o in schema.outputs]
        assert opdef.infer is not None


def test_traits() -> None:
    for name in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
        assert ir.get_op(name).has(Trait.QUANTIZABLE)
    for opdef in nn.OPS:
        assert opdef.has(Trait.LAYOUT_SENSITIVE) == ("format" in opdef.attrs), opdef.name
    assert ir.get_op("MaxPool").attrs["kernel_shape"].required
    assert ir.get_op("Hardmax").default("axis") == -1
    assert ir.get_op("RNN").default("activations") == ["Tanh", "Tanh"]


@pytest.mark.parametrize(
    ("size", "k", "s", "d", "pads", "auto_pad", "ceil", "want"),
    [
        (9, 3, 2, 1, [1, 1], "NOTSET", 0, ([1], [1], [5])),
        (8, 3, 2, 1, [0, 0], "NOTSET", 1, ([0], [0], [4])),
        (9, 3, 2, 1, None, "SAME_UPPER", 0, ([1], [1], [5])),
        (8, 3, 2, 1, None, "SAME_UPPER", 0, ([0], [1], [4])),
        (8, 3, 2, 1, None, "SAME_LOWER", 0, ([1], [0], [4])),
        (10, 3, 2, 2, None, "SAME_UPPER", 0, ([1], [2], [5])),
        (9, 3, 2, 1, [5, 5], "VALID", 0, ([0], [0], [4])),
    ],
)
def test_resolve_pads(size, k, s, d, pads, auto_pad, ceil, want) -> None:  # noqa: ANN001
    pads_ = None if pads is None else pads
    assert resolve_pads([size], [k], [s], [d], pads_, auto_pad, ceil) == tuple(map(list, want))


def test_pool_out_size_ceil_last_window_starts_inside() -> None:
    assert pool_out_size(5, 2, 2, 0, 1, 1) == 3  # the window at 6 would start in the pad
    assert pool_out_size(8, 2, 2, 1, 0, 1) == 5
    assert pool_out_size(8, 2, 2, 1, 0, 0) == 4


def test_conv_transpose_geometry() -> None:
    assert conv_transpose_geometry([4], [3], [2], None, [1, 1], [1], None, "NOTSET") == ([1], [8])
    assert conv_transpose_geometry([4], [3], [2], None, None, None, [10], "NOTSET") == ([0], [10])
    assert conv_transpose_geometry([4], [4], [2], None, None, None, None, "SAME_UPPER") == (
        [1], [8])


def test_conv_infer_symbolic_batch_and_nhwc() -> None:
    attrs = {"pads": [1, 1, 1, 1], "strides": [2, 2]}
    assert shape_of("Conv", [("N", 3, 224, 224), (64, 3, 3, 3)], attrs) == ("N", 64, 112, 112)
    nhwc = {**attrs, "format": "NHWC"}
    assert shape_of("Conv", [("N", 224, 224, 3), (64, 3, 3, 3)], nhwc) == ("N", 112, 112, 64)
    assert shape_of("Conv", [("N", 3, "H", 10), (8, 3, 3, 3)]) == ("N", 8, None, None)
    assert shape_of("Conv", [None, (8, 3, 3, 3)]) is None
    assert shape_of("Conv", [(1, 3, 5, 5), None], {"kernel_shape": [3, 3]}) == (1, None, 3, 3)
    same = {"auto_pad": "SAME_UPPER", "strides": [2]}
    assert shape_of("Conv", [(1, 2, 7), (4, 2, 3)], same) == (1, 4, 4)


def test_conv_transpose_infer() -> None:
    attrs = {"strides": [2, 2], "group": 2, "output_padding": [1, 0], "pads": [1, 1, 1, 1]}
    assert shape_of("ConvTranspose", [("B", 4, 5, 6), (4, 3, 3, 3)], attrs) == ("B", 6, 10, 11)
    os_ = {"strides": [2, 2], "output_shape": [11, 12]}
    assert shape_of("ConvTranspose", [(1, 4, 5, 6), (4, 3, 3, 3)], os_) == (1, 3, 11, 12)
    assert shape_of("ConvTranspose", [(1, 4, "h", 6), (4, 3, 3, 3)], os_) == (1, 3, 11, 12)


def test_pool_infer() -> None:
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}
    assert shape_of("MaxPool", [("N", 64, 112, 112)], attrs) == ("N", 64, 56, 56)
    out = infer("MaxPool", [(1, 2, 8, 9)], attrs, n_out=2)
    assert out == [(F, (1, 2, 4, 4)), (DataType.INT64, (1, 2, 4, 4))]
    assert shape_of("AveragePool", [(1, 9, 9, 2)], {**attrs, "format": "NHWC"}) == (1, 4, 4, 2)
    assert shape_of("LpPool", [(1, 2, "h", "w")], attrs) == (1, 2, None, None)
    assert shape_of("GlobalAveragePool", [("N", 8, "h", "w")]) == ("N", 8, 1, 1)
    assert shape_of("GlobalMaxPool", [("N", 7, 8)], {"format": "NHWC"}) == ("N", 1, 8)
    assert shape_of("GlobalLpPool", [None]) is None


def test_norm_infer() -> None:
    x = ("N", 3, 4, 5)
    assert shape_of("BatchNormalization", [x, (3,), (3,), (3,), (3,)]) == x
    ln = infer("LayerNormalization", [x, (5,), "omit"], {"axis": -1}, n_out=3)
    assert ln == [(F, x), (F, ("N", 3, 4, 1)), (F, ("N", 3, 4, 1))]
    ln = infer("LayerNormalization", [x, (4, 5)], {"axis": 2}, n_out=2)
    assert ln[1] == (F, ("N", 3, 1, 1))
    assert shape_of("GroupNormalization", [x, (3,), (3,)], {"num_groups": 3}) == x
    assert shape_of("InstanceNormalization", [x, (3,), (3,)]) == x
    assert shape_of("LRN", [x], {"size": 3}) == x
    assert shape_of("MeanVarianceNormalization", [x]) == x


def test_matmul_family_infer() -> None:
    assert shape_of("Gemm", [("M", 4), (5, 4)], {"transB": 1}) == ("M", 5)
    assert shape_of("Gemm", [(4, "M"), (4, 5), (5,)], {"transA": 1}) == ("M", 5)
    assert shape_of("MatMul", [("B", "S", 8), (8, 16)]) == ("B", "S", 16)
    assert shape_of("MatMul", [(8,), (2, 8, 3)]) == (2, 3)
    assert shape_of("MatMul", [(2, 1, 3, 8), (8, 5)]) == (2, 1, 3, 5)
    assert shape_of("MatMul", [(4, 8), (8,)]) == (4,)
    assert shape_of("MatMul", [(8,), (8,)]) == ()
    assert shape_of("MatMul", [(2, 1, 3, 8), (4, 8, 2)]) == (2, 4, 3, 2)
    assert shape_of("MatMul", [None, (8, 2)]) is None
    assert shape_of("Softmax", [("B", 10)]) == ("B", 10)
    out = infer("Dropout", [("B", 10)], n_out=2)
    assert out == [(F, ("B", 10)), (DataType.BOOL, ("B", 10))]


@pytest.mark.parametrize(("op", "gates"), [("LSTM", 4), ("GRU", 3), ("RNN", 1)])
def test_rnn_infer(op: str, gates: int) -> None:
    n_out = 3 if op == "LSTM" else 2
    w = (2, gates * 16, 8)
    attrs = {"direction": "bidirectional"}
    out = infer(op, [("T", "B", 8), w, (2, gates * 16, 16)], attrs, n_out=n_out)
    assert out[0] == (F, ("T", 2, "B", 16))
    assert all(o == (F, (2, "B", 16)) for o in out[1:])
    out = infer(op, [("B", "T", 8), w, None], {**attrs, "layout": 1, "hidden_size": 16}, n_out=2)
    assert out == [(F, ("B", "T", 2, 16)), (F, ("B", 2, 16))]


def test_resize_infer() -> None:
    x = (1, 3, 10, 20)
    scales = np.array([1, 1, 2, 0.5], np.float32)
    assert shape_of("Resize", [x, "omit", None], consts={2: scales}) == (1, 3, 20, 10)
    sizes = np.array([15, 15], np.int64)
    attrs = {"axes": [2, 3], "keep_aspect_ratio_policy": "not_larger"}
    assert shape_of("Resize", [x, "omit", "omit", None], attrs, consts={3: sizes}) == (
        1, 3, 8, 15)
    attrs["keep_aspect_ratio_policy"] = "not_smaller"
    assert shape_of("Resize", [x, "omit", "omit", None], attrs, consts={3: sizes}) == (
        1, 3, 15, 30)
    assert shape_of("Resize", [x, "omit", "omit", (2,)], {"axes": [2, 3]}) == (1, 3, None, None)
    assert shape_of("Resize", [("N", 3, 4, 4), "omit", None], consts={2: scales}) == (
        None, None, None, None)


def test_einsum_and_grid_sample_infer() -> None:
    eq = {"equation": "bhqd,bhkd->bhqk"}
    assert shape_of("Einsum", [("B", 2, 3, 4), ("B", 2, 5, 4)], eq) == ("B", 2, 3, 5)
    assert shape_of("Einsum", [(3, 4), (4, 5)], {"equation": "ij,jk"}) == (3, 5)
    assert shape_of("Einsum", [(2, 3, 4), (4, 6)], {"equation": "...ij,jk"}) == (2, 3, 6)
    assert shape_of("Einsum", [(3, 3)], {"equation": "ii->"}) == ()
    assert shape_of("Einsum", [None], {"equation": "ij->ji"}) is None
    assert shape_of("GridSample", [("N", 3, 8, 8), ("N", 5, 6, 2)]) == ("N", 3, 5, 6)
