"""Declarations and shape inference of the tensor-manipulation ops (ir/ops/tensor.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper

from ir import DataType, Node, Shape, Trait, Value, get_op
from ir.ops import tensor

F32, I64 = DataType.FLOAT, DataType.INT64
NAMES = [d.name for d in tensor.OPS]
LITECONV_ONLY_ATTRS = {"format"}


def infer(
    op: str,
    shapes: list[Shape | None],
    consts: dict[int, Any] | None = None,
    attrs: dict | None = None,
    n_out: int = 1,
    dtype: DataType = F32,
) -> list[tuple[DataType, Shape | None]]:
    """Run ``op``'s infer fn on inputs of the given shapes (``consts`` by input index)."""
    consts = consts or {}
    inputs: list[Value | None] = []
    for i, shape in enumerate(shapes):
        if i in consts:
            inputs.append(None if consts[i] is None else Value(f"c{i}", const=consts[i]))
        else:
            inputs.append(Value(f"x{i}", dtype if i == 0 else I64, shape))
    node = Node(op, inputs, n_out, attrs=attrs or {})
    return get_op(op).infer(node)  # type: ignore[misc]


def i64(*v: int) -> np.ndarray:
    return np.array(v, dtype=np.int64)


@pytest.mark.parametrize("name", NAMES)
def test_matches_onnx_schema(name: str) -> None:
    """Inputs, outputs, attribute names and defaults are ONNX's latest version."""
    schema = onnx.defs.get_schema(name)
    opdef = get_op(name)
    opt = onnx.defs.OpSchema.FormalParameterOption
    suffix = {opt.Single: "", opt.Optional: "?", opt.Variadic: "*"}
    assert opdef.inputs == tuple(p.name + suffix[p.option] for p in schema.inputs)
    assert [o.rstrip("?*") for o in opdef.outputs] == [p.name for p in schema.outputs]
    assert set(opdef.attrs) - LITECONV_ONLY_ATTRS == set(schema.attributes)
    for key, spec in schema.attributes.items():
        ours = opdef.attrs[key]
        if spec.required:
            assert ours.required, key
        elif spec.default_value.name:
            want = helper.get_attribute_value(spec.default_value)
            want = want.decode() if isinstance(want, bytes) else want
            if isinstance(want, onnx.TensorProto):
                continue
            assert ours.default == want, (key, ours.default, want)
        elif name != "ConstantOfShape":  # its 'value' defaults to float32 0 (spec text)
            assert ours.default is None, key


def test_traits() -> None:
    nop = {"Reshape", "Expand", "Cast", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Pad"}
    nop |= {"Concat", "Tile"}
    for name in NAMES:
        traits = get_op(name).traits
        assert (Trait.SHAPE_ONLY in traits) == (name in {"Shape", "Size"}), name
        assert (Trait.NO_OP_CANDIDATE in traits) == (name in nop), name
        assert (Trait.LAYOUT_SENSITIVE in traits) == (name in {"DepthToSpace", "SpaceToDepth"})
    for name in ("DepthToSpace", "SpaceToDepth"):
        assert get_op(name).default("format") == "NCHW"


def test_constant_of_shape_default_value() -> None:
    value = get_op("ConstantOfShape").default("value")
    assert value.dtype == np.float32 and value.tolist() == [0.0]
    assert not value.flags.writeable


REQUIRED_ATTRS = {
    "Concat": {"axis": 0},
    "Cast": {"to": int(DataType.FLOAT16)},
    "DepthToSpace": {"blocksize": 2},
    "SpaceToDepth": {"blocksize": 2},
    "BitCast": {"to": int(DataType.INT32)},
    "RandomUniform": {"shape": [2, 3]},
    "RandomNormal": {"shape": [2, 3]},
    "MaxUnpool": {"kernel_shape": [2, 2]},
}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("rank", [None, 0, 4], ids=["unknown", "scalar", "symbolic"])
def test_infer_never_crashes(name: str, rank: int | None) -> None:
    """Unknown ranks, scalars and symbolic dims give an answer (maybe None), not an error."""
    opdef = get_op(name)
    shape = None if rank is None else tuple(["N", None, "H", 3][:rank])
    n_in = len([i for i in opdef.inputs if not i.endswith("?")])
    n_out = len(opdef.outputs)
    shapes = [shape] + [None] * (n_in - 1)
    result = infer(name, shapes, attrs=REQUIRED_ATTRS.get(name), n_out=n_out)
    assert len(result) == n_out
    for dtype, out in result:
        assert isinstance(dtype, DataType)
        assert out is None or isinstance(out, tuple)


@pytest.mark.parametrize(
    ("op", "shapes", "consts", "attrs"),
    [
        ("Transpose", [(2, 3)], {}, {"perm": [0, 0]}),
        ("Unsqueeze", [(2, 3), None], {1: i64(0, 0)}, {}),
        ("Squeeze", [(2, 3), None], {1: i64(5)}, {}),
        ("Slice", [(2, 3), None, None, None], {1: i64(0, 1), 2: i64(1), 3: i64(0)}, {}),
        ("Pad", [(2, 3), None], {1: i64(1, 1)}, {}),
        ("Tile", [(2, 3), None], {1: i64(2)}, {}),
        ("Concat", [(2, 3), (2, 3, 1)], {}, {"axis": 0}),
        ("Gather", [(), (2,)], {}, {}),
    ],
)
def test_infer_invalid_attributes_give_unknown(
    op: str, shapes: list, consts: dict, attrs: dict
) -> None:
    """Malformed nodes are the verifier's business: inference answers unknown dims."""
    ((dtype, shape),) = infer(op, shapes, consts, attrs)
    assert dtype == F32
    assert shape is None or None in shape


RESHAPE = [
    (("N", 3, 4), i64(0, -1), {}, ("N", 12)),
    (("N", 3, 4), i64(-1, 4), {}, (None, 4)),
    (("N", "C", 4), i64(0, 0, 2, 2), {}, ("N", "C", 2, 2)),
    (("N", 3, 4), i64(0, 4, -1), {}, ("N", 4, 3)),
    ((2, 3, 4), i64(0, -1), {}, (2, 12)),
    ((2, "S", 4), i64(8, -1), {}, (8, "S")),
    ((0, 3), i64(3, 0), {"allowzero": 1}, (3, 0)),
    ((2, 3), i64(3, 0), {"allowzero": 0}, (3, 3)),
    (None, i64(0, -1), {}, (None, None)),
]


@pytest.mark.parametrize(("shape", "target", "attrs", "want"), RESHAPE)
def test_reshape(shape: Shape | None, target: np.ndarray, attrs: dict, want: Shape) -> None:
    assert infer("Reshape", [shape, None], {1: target}, attrs) == [(F32, want)]


def test_reshape_dynamic_target() -> None:
    assert infer("Reshape", [(2, 3), (3,)]) == [(F32, (None, None, None))]
    assert infer("Reshape", [(2, 3), ("R",)]) == [(F32, None)]


@pytest.mark.parametrize(
    ("op", "shapes", "consts", "attrs", "want"),
    [
        ("Flatten", [("N", 3, 4)], {}, {"axis": 1}, ("N", 12)),
        ("Flatten", [("N", 3, 4)], {}, {"axis": -1}, (None, 4)),
        ("Flatten", [(2, 3)], {}, {"axis": 0}, (1, 6)),
        ("Transpose", [("N", 3, 4)], {}, {}, (4, 3, "N")),
        ("Transpose", [("N", 3, 4)], {}, {"perm": [0, 2, 1]}, ("N", 4, 3)),
        ("Squeeze", [("N", 1, 4), None], {1: i64(-2)}, {}, ("N", 4)),
        ("Squeeze", [("N", 1, 4)], {}, {}, None),
        ("Squeeze", [(1, 3, 1)], {}, {}, (3,)),
        ("Unsqueeze", [("N", 4), None], {1: i64(0, -1)}, {}, (1, "N", 4, 1)),
        ("Unsqueeze", [("N", 4), (2,)], {}, {}, (None, None, None, None)),
        ("Concat", [("N", 3), ("N", 5)], {}, {"axis": -1}, ("N", 8)),
        ("Concat", [("N", 3), ("M", 3)], {}, {"axis": 0}, (None, 3)),
        ("Concat", [(None, 3), None], {}, {"axis": 1}, (None, None)),
        ("Concat", [(2, None), (2, 4)], {}, {"axis": 0}, (4, 4)),
        ("Slice", [(10, "N"), None, None], {1: i64(2), 2: i64(-1)}, {}, (7, "N")),
        ("Slice", [("N", 10), None, None], {1: i64(2), 2: i64(-1)}, {}, (None, 10)),
        (
            "Slice",
            [("N", 10), None, None, None, None],
            {1: i64(-1), 2: i64(-100), 3: i64(1), 4: i64(-2)},
            {},
            ("N", 5),
        ),
        ("Slice", [("N", 10), (1,), (1,), None], {3: i64(1)}, {}, ("N", None)),
        ("Slice", [("N", 10), None, None, (1,)], {1: i64(0), 2: i64(1)}, {}, (None, None)),
        ("Gather", [("N", 5, 4), (2, 3)], {}, {"axis": 1}, ("N", 2, 3, 4)),
        ("Gather", [("N", 5, 4), ()], {}, {"axis": -1}, ("N", 5)),
        ("GatherElements", [("N", 5), ("N", 2)], {}, {"axis": 1}, ("N", 2)),
        ("GatherND", [("N", 5, 4), ("N", 2)], {}, {"batch_dims": 1}, ("N",)),
        ("GatherND", [(3, 5, 4), (7, 2)], {}, {}, (7, 4)),
        ("GatherND", [(3, 5, 4), (7, None)], {}, {}, None),
        ("Expand", [("N", 1), None], {1: i64(2, 1, 6)}, {}, (2, "N", 6)),
        ("Expand", [("N", 1), (3,)], {}, {}, (None, None, None)),
        ("Tile", [("N", 3), None], {1: i64(1, 2)}, {}, ("N", 6)),
        ("Tile", [("N", 3), None], {1: i64(2, 1)}, {}, (None, 3)),
        ("Pad", [("N", 3, 4), None], {1: i64(0, 1, 1, 0, 1, -1)}, {}, ("N", 5, 4)),
        ("Pad", [("N", 3, 4), None, None, None], {1: i64(1, 2), 3: i64(-1)}, {}, ("N", 3, 7)),
        ("Pad", [("N", 3, 4), (6,)], {}, {}, (None, None, None)),
        ("ConstantOfShape", [None], {0: i64(2, 3)}, {}, (2, 3)),
        ("ConstantOfShape", [(3,)], {}, {}, (None, None, None)),
        ("OneHot", [("N", 3), None, (2,)], {1: np.array(10)}, {"axis": 1}, ("N", 10, 3)),
        ("OneHot", [("N", 3), (), (2,)], {}, {}, ("N", 3, None)),
        ("Trilu", [("B", 3, 3)], {}, {}, ("B", 3, 3)),
        ("ReverseSequence", [("T", "B", 8), ("B",)], {}, {}, ("T", "B", 8)),
        ("DepthToSpace", [("N", 8, "H", 3)], {}, {"blocksize": 2}, ("N", 2, None, 6)),
        ("DepthToSpace", [("N", 3, 4, 8)], {}, {"blocksize": 2, "format": "NHWC"}, ("N", 6, 8, 2)),
        ("SpaceToDepth", [("N", 3, 4, 6)], {}, {"blocksize": 2}, ("N", 12, 2, 3)),
        ("SpaceToDepth", [("N", 4, 6, 3)], {}, {"blocksize": 2, "format": "NHWC"}, ("N", 2, 3, 12)),
        ("EyeLike", [(3, 4)], {}, {}, (3, 4)),
        ("Compress", [("N", 4), None], {1: np.array([1, 0, 1, 1, 1], bool)}, {"axis": 1}, ("N", 3)),
        ("Compress", [("N", 4), (4,)], {}, {}, (None,)),
    ],
)
def test_infer(op: str, shapes: list, consts: dict, attrs: dict, want: Shape | None) -> None:
    (dtype, shape), *_ = infer(op, shapes, consts, attrs)
    assert shape == want


def test_split() -> None:
    assert infer("Split", [("N", 7)], attrs={"axis": 1, "num_outputs": 3}, n_out=3) == [
        (F32, ("N", 3)),
        (F32, ("N", 3)),
        (F32, ("N", 1)),
    ]
    out = infer("Split", [(6, "C"), None], {1: i64(1, 5)}, n_out=2)
    assert [s for _, s in out] == [(1, "C"), (5, "C")]
    out = infer("Split", [("N", 4), (2,)], attrs={"axis": 1}, n_out=2)
    assert [s for _, s in out] == [("N", None), ("N", None)]
    out = infer("Split", [("N", 6)], attrs={"axis": 0}, n_out=2)
    assert [s for _, s in out] == [(None, 6), (None, 6)]


def test_dtype_rules() -> None:
    assert infer("Shape", [("N", 3, 4)]) == [(I64, (3,))]
    assert infer("Shape", [("N", 3, 4)], attrs={"start": -2, "end": 10}) == [(I64, (2,))]
    assert infer("Shape", [None]) == [(I64, (None,))]
    assert infer("Size", [("N", 3)]) == [(I64, ())]
    assert infer("Cast", [("N",)], attrs={"to": int(DataType.BFLOAT16)}) == [
        (DataType.BFLOAT16, ("N",))
    ]
    cast_like = infer("CastLike", [("N",), None], {1: np.zeros(1, np.float16)})
    assert cast_like == [(DataType.FLOAT16, ("N",))]
    assert infer("ConstantOfShape", [None], {0: i64(2)}) == [(F32, (2,))]
    value = np.array([1], np.int32)
    assert infer("ConstantOfShape", [(2,)], attrs={"value": value}) == [
        (DataType.INT32, (None, None))
    ]
    assert infer("NonZero", [("N", 3)]) == [(I64, (2, None))]
    assert infer("EyeLike", [(2, 2)], attrs={"dtype": int(DataType.BOOL)}) == [
        (DataType.BOOL, (2, 2))
    ]
    topk = infer("TopK", [("N", 9), None], {1: i64(3)}, n_out=2)
    assert topk == [(F32, ("N", 3)), (I64, ("N", 3))]
    onehot = infer("OneHot", [(2,), None, None], {1: np.array(3), 2: np.zeros(2, np.int8)})
    assert onehot == [(DataType.INT8, (2, 3))]


@pytest.mark.parametrize(
    ("consts", "want"),
    [
        ((np.int64(0), np.int64(10), np.int64(3)), (4,)),
        ((np.float32(1), np.float32(0), np.float32(-0.25)), (4,)),
        ((np.int32(5), np.int32(1), np.int32(1)), (0,)),
        ((np.int64(0), None, np.int64(1)), (None,)),
    ],
)
def test_range(consts: tuple, want: Shape) -> None:
    cmap = {i: np.asarray(c) for i, c in enumerate(consts) if c is not None}
    ((_, shape),) = infer("Range", [(), (), ()], cmap)
    assert shape == want


def test_unique() -> None:
    out = infer("Unique", [("N", 3)], n_out=4)
    assert out == [(F32, (None,)), (I64, (None,)), (I64, (None,)), (I64, (None,))]
    out = infer("Unique", [(2, 3)], n_out=4)
    assert out[2] == (I64, (6,))
    out = infer("Unique", [(5, "C")], attrs={"axis": 0}, n_out=3)
    assert out == [(F32, (None, "C")), (I64, (None,)), (I64, (5,))]
