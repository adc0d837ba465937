"""Tensor-manipulation kernels against onnx.reference on one-node models.

Each case builds the same node twice: as an ONNX model (run by
``onnx.reference.ReferenceEvaluator``) and as an IR graph (run by the executor).
Outputs must match in dtype, shape and value; the op's shape inference must agree
with the shapes the kernel produced (exactly, when shape-like inputs are constant).
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from converter.executor.runtime import Runtime
from ir import DataType, Graph, Node, Value, get_op
from ir.verify import check_graph

OPSET = 28
BF16 = np.dtype(ml_dtypes.bfloat16)
I64_MAX, I64_MIN = np.iinfo(np.int64).max, np.iinfo(np.int64).min
# ops whose output shape depends on input values, not only on shapes/constants
DATA_DEPENDENT = {"NonZero", "Unique", "Compress", "NonMaxSuppression"}


def rnd(*shape: int, dtype: Any = np.float32, seed: int = 0, lo: int = -5, hi: int = 6) -> Any:
    """Random test data; integers in [lo, hi) cast to ``dtype`` (floats get a fraction)."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return rng.random(shape) > 0.5
    base = rng.integers(lo, hi, size=shape).astype(np.float64)
    if dt.kind == "f" or dt == BF16:
        base += rng.random(shape).round(2)
    return base.astype(dt)


def i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def case(op: str, inputs: list, attrs: dict | None = None, n_out: int = 1, **kw: Any) -> Any:
    """One pytest param: ``inputs[0]`` is data, later non-None inputs are constants."""
    const = kw.pop("const", tuple(range(1, len(inputs))))
    ident = kw.pop("id", None)
    return pytest.param(op, inputs, attrs or {}, n_out, const, kw, id=ident)


def onnx_attrs(attrs: dict) -> dict:
    out = {}
    for k, v in attrs.items():
        if k == "format":
            continue
        out[k] = numpy_helper.from_array(v, name=k) if isinstance(v, np.ndarray) else v
    return out


def run_reference(op: str, inputs: list, attrs: dict, n_out: int) -> list[np.ndarray]:
    names = ["" if x is None else f"in{i}" for i, x in enumerate(inputs)]
    outs = [f"out{i}" for i in range(n_out)]
    node = helper.make_node(op, names, outs, **onnx_attrs(attrs))
    graph_inputs = [
        helper.make_tensor_value_info(n, DataType.from_numpy(x.dtype).value, x.shape)
        for n, x in zip(names, inputs, strict=True)
        if x is not None
    ]
    graph_outputs = [helper.make_value_info(o, onnx.TypeProto()) for o in outs]
    graph = helper.make_graph([node], "g", graph_inputs, graph_outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    feeds = {n: x for n, x in zip(names, inputs, strict=True) if x is not None}
    return list(ReferenceEvaluator(model).run(None, feeds))


def build_ir(op: str, inputs: list, attrs: dict, n_out: int, const: tuple) -> tuple[Graph, Node]:
    values: list[Value | None] = []
    graph_inputs = []
    for i, x in enumerate(inputs):
        if x is None:
            values.append(None)
        elif i in const:
            values.append(Value(f"in{i}", const=x))
        else:
            v = Value(f"in{i}", DataType.from_numpy(x.dtype), x.shape)
            values.append(v)
            graph_inputs.append(v)
    node = Node(op, values, [Value(f"out{i}") for i in range(n_out)], attrs=attrs)
    graph = Graph(inputs=graph_inputs, outputs=list(node.outputs))
    graph.append(node)
    return graph, node


def run_ir(op: str, inputs: list, attrs: dict, n_out: int, const: tuple) -> tuple[list, Node]:
    graph, node = build_ir(op, inputs, attrs, n_out, const)
    check_graph(graph)
    feeds = {v.name: x for v, x in zip(node.inputs, inputs, strict=True) if v in graph.inputs}
    result = Runtime(graph).run(feeds)
    return [result[o.name] for o in node.outputs], node


def check_infer(node: Node, got: list[np.ndarray], exact: bool) -> None:
    inferred = get_op(node.op).infer(node)  # type: ignore[misc]
    assert len(inferred) == len(got)
    for (dtype, shape), arr in zip(inferred, got, strict=True):
        assert dtype == DataType.from_numpy(arr.dtype), (dtype, arr.dtype)
        if exact:
            assert shape == arr.shape, (shape, arr.shape)
        elif shape is not None:
            assert len(shape) == arr.ndim, (shape, arr.shape)
            for d, s in zip(shape, arr.shape, strict=True):
                assert d is None or d == s, (shape, arr.shape)


def assert_same(got: np.ndarray, want: np.ndarray, tol: float = 0.0) -> None:
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    if got.dtype.kind == "V" or got.dtype.itemsize == 1 and got.dtype.kind == "f":
        got, want = got.astype(np.float32), want.astype(np.float32)  # ml_dtypes floats
    if tol and got.dtype.kind == "f":
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    else:
        np.testing.assert_array_equal(got, want)


X234 = rnd(2, 3, 4)

CASES = [
    # Reshape
    case("Reshape", [X234, i64(0, -1)], id="reshape-0-neg1"),
    case("Reshape", [X234, i64(4, -1, 2)], id="reshape-neg1-mid"),
    case("Reshape", [rnd(2, 3, 4, dtype=np.float16), i64(-1)], id="reshape-f16-flat"),
    case("Reshape", [rnd(2, 3, 4, dtype=BF16), i64(0, 0, 4)], id="reshape-bf16-zeros"),
    case("Reshape", [rnd(6, 2, dtype=np.bool_), i64(3, 0, -1)], id="reshape-bool"),
    case("Reshape", [np.zeros((0, 3), np.int32), i64(3, 0)], {"allowzero": 1}, id="allowzero"),
    case("Reshape", [rnd(4, 2, dtype=ml_dtypes.int4, lo=-8, hi=8), i64(2, 4)], id="reshape-int4"),
    # Flatten
    *[case("Flatten", [X234], {"axis": a}, id=f"flatten-{a}") for a in (0, 1, -1, 3, -3)],
    # Transpose
    case("Transpose", [X234], id="transpose-default"),
    case("Transpose", [rnd(2, 3, 4, dtype=np.int8)], {"perm": [1, 0, 2]}, id="transpose-i8"),
    case("Transpose", [rnd(2, 3, dtype=ml_dtypes.uint4, lo=0, hi=15)], id="transpose-u4"),
    # Squeeze / Unsqueeze
    case("Squeeze", [rnd(1, 3, 1, 2)], id="squeeze-all"),
    case("Squeeze", [rnd(1, 3, 1, 2), i64(-2)], id="squeeze-neg"),
    case("Squeeze", [rnd(1, 3, 1, 2, dtype=np.int64), i64(0, 2)], id="squeeze-two"),
    case("Unsqueeze", [rnd(3, 4), i64(0)], id="unsqueeze-0"),
    case("Unsqueeze", [rnd(3, 4), i64(-1)], id="unsqueeze-neg"),
    case("Unsqueeze", [rnd(3, 4, dtype=BF16), i64(1, -1)], id="unsqueeze-two"),
    case("Unsqueeze", [np.array(3.0, np.float32), i64(0)], id="unsqueeze-scalar"),
    # Concat
    case("Concat", [rnd(2, 3), rnd(2, 1, seed=1), rnd(2, 4, seed=2)], {"axis": -1}, const=()),
    case("Concat", [rnd(1, 3, dtype=np.int32), rnd(2, 3, dtype=np.int32)], {"axis": 0}, const=()),
    case("Concat", [rnd(2, 2, dtype=np.float16), rnd(2, 2, dtype=np.float16)], {"axis": 1}),
    # Split
    case("Split", [rnd(7, 4)], {"num_outputs": 3}, 3, id="split-uneven"),
    case("Split", [rnd(4, 8)], {"num_outputs": 3, "axis": -1}, 3, id="split-uneven-neg"),
    case("Split", [rnd(6, 2, dtype=np.int64), i64(1, 2, 3)], {}, 3, id="split-sizes"),
    case("Split", [rnd(2, 6)], {"axis": 1}, 2, id="split-equal"),
    case("Split", [rnd(2, 5, dtype=np.float16), i64(0, 5)], {"axis": 1}, 2, id="split-empty"),
    # Slice
    case("Slice", [rnd(10, 6), i64(1), i64(100)], id="slice-clamp"),
    case("Slice", [rnd(10, 6), i64(-3), i64(-1), i64(-1)], id="slice-negidx"),
    case("Slice", [rnd(10, 6), i64(-1), i64(-100), i64(0), i64(-1)], id="slice-rev"),
    case("Slice", [rnd(10, 6), i64(8), i64(2), i64(0), i64(-2)], id="slice-negstep"),
    case("Slice", [rnd(10, 6), i64(20), i64(-20), i64(0), i64(-3)], id="slice-negstep-clamp"),
    case("Slice", [rnd(10, 6), i64(I64_MAX), i64(I64_MIN), i64(1), i64(-1)], id="slice-int64-ext"),
    case("Slice", [rnd(10, 6), i64(12), i64(20)], id="slice-empty"),
    case("Slice", [rnd(10, 6, dtype=np.int32), i64(1, 0), i64(8, 5), i64(0, 1), i64(3, 2)]),
    case("Slice", [rnd(3, 4, 5, dtype=BF16), i64(0, -1), i64(2, 0), i64(-1, 1), i64(1, -1)]),
    # Gather family
    case("Gather", [rnd(5, 4), np.array([[0, -1], [2, 4]])], id="gather-neg"),
    case("Gather", [rnd(5, 4, dtype=np.int8), np.array([3, -4])], {"axis": -1}, id="gather-ax"),
    case("Gather", [rnd(2, 5, 3), np.array(1, np.int32)], {"axis": 1}, id="gather-scalar"),
    case("GatherElements", [rnd(3, 4), np.array([[0, 1, 2, -1], [-3, 0, 1, 1]])], {"axis": 0}),
    case("GatherElements", [rnd(3, 4, dtype=np.float16), np.array([[3, -1]] * 3)], {"axis": 1}),
    case("GatherND", [rnd(3, 4, 2), np.array([[0, 1], [2, -1]])], id="gathernd-k2"),
    case("GatherND", [rnd(3, 4), np.array([[1], [0], [-1]])], id="gathernd-k1"),
    case("GatherND", [rnd(2, 3, 4), np.array([[1], [2]])], {"batch_dims": 1}, id="gathernd-b1"),
    case("GatherND", [rnd(2, 3, 4), np.array([[[1, 3]], [[0, 0]]])], {"batch_dims": 1}),
    # Scatter family
    *[
        case(
            "ScatterElements",
            [rnd(3, 4), np.array([[0, 1, 2, 0], [1, 1, 0, -1]]), rnd(2, 4, seed=1)],
            {"reduction": r, "axis": 0},
            id=f"scatterel-{r}",
        )
        for r in ("add", "mul", "max", "min")
    ],
    case(
        "ScatterElements",
        [rnd(3, 4), np.array([[3, -3], [0, 1]]), rnd(2, 2, seed=2)],
        {"axis": -1},
        id="scatterel-none",
    ),
    case("ScatterND", [rnd(4, 3), np.array([[1], [-1]]), rnd(2, 3, seed=1)], id="scatternd"),
    case(
        "ScatterND",
        [
            rnd(4, 3, dtype=np.int32),
            np.array([[1, 2], [1, 2], [0, 0]]),
            rnd(3, dtype=np.int32, seed=3),
        ],
        {"reduction": "add"},
        id="scatternd-add",
    ),
    case("ScatterND", [rnd(4, 3), np.array([[1], [1]]), rnd(2, 3, seed=1)], {"reduction": "max"}),
    # Expand / Tile
    case("Expand", [rnd(3, 1), i64(2, 1, 4)], id="expand-rank-up"),
    case("Expand", [rnd(3, 1, dtype=np.bool_), i64(4)], id="expand-bool"),
    case("Expand", [rnd(3, 1, dtype=np.float16), i64(1, 1)], id="expand-ones"),
    case("Tile", [rnd(2, 3), i64(2, 1)], id="tile"),
    case("Tile", [rnd(2, 3, dtype=np.uint8, lo=0), i64(1, 3)], id="tile-u8"),
    # Pad
    case("Pad", [rnd(3, 4), i64(1, 2, 0, 1), np.array(7.5, np.float32)], id="pad-const"),
    case("Pad", [rnd(3, 4, dtype=np.int32), i64(1, 2, 2, 1)], id="pad-const-default"),
    *[
        case("Pad", [rnd(3, 4), i64(2, 1, 1, 2)], {"mode": m}, id=f"pad-{m}")
        for m in ("reflect", "edge", "wrap")
    ],
    case("Pad", [rnd(2, 3, 4), i64(1, 2), None, i64(-1)], {"mode": "edge"}, id="pad-axes"),
    case("Pad", [rnd(2, 4, dtype=np.float16), i64(0, 3, 1, 0), np.array(1, np.float16)]),
    # Shape / Size
    case("Shape", [rnd(2, 3, 4, 5)], id="shape"),
    case("Shape", [rnd(2, 3, 4, 5)], {"start": 1, "end": -1}, id="shape-range"),
    case("Shape", [rnd(2, 3, 4, 5)], {"start": -10, "end": 100}, id="shape-clamp"),
    case("Shape", [rnd(2, 3)], {"start": 2, "end": 1}, id="shape-empty"),
    case("Size", [rnd(2, 3, 4, dtype=np.int8)]),
    case("Size", [np.array(1.0, np.float32)], id="size-scalar"),
    # Cast / CastLike
    case("Cast", [rnd(3, 4) - 0.5], {"to": DataType.INT32}, id="cast-f-i32-trunc"),
    case("Cast", [rnd(3, 4)], {"to": DataType.BOOL}, id="cast-f-bool"),
    case("Cast", [rnd(3, 4, dtype=np.int64)], {"to": DataType.FLOAT16}, id="cast-i64-f16"),
    case("Cast", [rnd(3, 4)], {"to": DataType.BFLOAT16}, id="cast-f-bf16"),
    case("Cast", [rnd(3, 4, dtype=np.float16)], {"to": DataType.INT64}, id="cast-f16-i64"),
    case("Cast", [rnd(3, 4, dtype=BF16)], {"to": DataType.INT32}, id="cast-bf16-i32"),
    case("Cast", [rnd(3, 4, dtype=np.int32, lo=-300, hi=300)], {"to": DataType.INT8}, id="wrap"),
    case("Cast", [rnd(3, 4, dtype=np.bool_)], {"to": DataType.DOUBLE}, id="cast-bool-f64"),
    case(
        "Cast",
        [np.array([1e6, -1e6, np.inf, np.nan, 1.3], np.float32)],
        {"to": DataType.FLOAT8E4M3FN},
        id="cast-f8-sat",
    ),
    case(
        "Cast",
        [np.array([1e6, -1e6, np.inf, 1.3], np.float32)],
        {"to": DataType.FLOAT8E5M2, "saturate": 0},
        id="cast-f8-nosat",
    ),
    case("CastLike", [rnd(3, 4), np.zeros(1, np.int64)], id="castlike"),
    case("CastLike", [rnd(3, dtype=np.int32), np.zeros(2, np.float16)], id="castlike-f16"),
    # Generators
    case("ConstantOfShape", [i64(2, 3)], const=(0,), id="cos-default"),
    case("ConstantOfShape", [i64(4)], {"value": np.array([7], np.int64)}, const=(0,)),
    case("ConstantOfShape", [i64(2, 0)], {"value": np.array([1], np.float16)}, const=(0,)),
    case(
        "Range",
        [np.array(3, np.int32), np.array(10, np.int32), np.array(3, np.int32)],
        const=(0, 1, 2),
        id="range-i32",
    ),
    case("Range", [np.array(10), np.array(4), np.array(-2)], const=(0, 1, 2), id="range-neg"),
    case(
        "Range",
        [np.array(1.0, np.float32), np.array(2.1, np.float32), np.array(0.3, np.float32)],
        const=(0, 1, 2),
        id="range-f32",
        tol=1e-6,
    ),
    case("Range", [np.array(5), np.array(1), np.array(2)], const=(0, 1, 2), id="range-empty"),
    case(
        "Range",
        [np.array(0, np.float16), np.array(3000, np.float16), np.array(1, np.float16)],
        const=(0, 1, 2),
        id="range-f16-stash",
    ),
    *[
        case(
            "OneHot",
            [np.array([[0, 2], [-1, 7]]), np.array(4), np.array([0.5, 2.0], np.float32)],
            {"axis": a},
            id=f"onehot-{a}",
        )
        for a in (-1, 0, 1)
    ],
    case(
        "OneHot",
        [np.array([1.0, -3.0], np.float32), np.array(5.0, np.float32), np.array([0, 9], np.int32)],
        id="onehot-float-idx",
    ),
    case("EyeLike", [rnd(3, 4)], id="eyelike"),
    case("EyeLike", [rnd(4, 3, dtype=np.int32)], {"k": -2, "dtype": DataType.FLOAT16}),
    case("EyeLike", [rnd(3, 3)], {"k": 1, "dtype": DataType.BOOL}, id="eyelike-bool"),
    case("Trilu", [rnd(4, 5)], id="trilu-upper"),
    case("Trilu", [rnd(2, 4, 3, dtype=np.int64), np.array(-1)], {"upper": 0}, id="trilu-low"),
    case("Trilu", [rnd(3, 5, dtype=np.bool_), np.array(2)], id="trilu-k"),
    # data-dependent
    case("NonZero", [rnd(3, 4, lo=-1, hi=2)], id="nonzero"),
    case("NonZero", [rnd(2, 3, 2, dtype=np.bool_)], id="nonzero-bool"),
    case("Compress", [rnd(3, 4), np.array([True, False, True])], {"axis": 0}, id="compress-0"),
    case("Compress", [rnd(3, 4), np.array([False, True])], {"axis": -1}, id="compress-short"),
    case("Compress", [rnd(3, 4, dtype=np.int8), np.array([1, 0, 0, 1, 1], bool)], id="compress"),
    case("Unique", [np.array([2, 1, 1, 3, 4, 3], np.int32)], {"sorted": 0}, 4, id="unique-uns"),
    case("Unique", [np.array([[1, 3], [2, 3]], np.float32)], {}, 4, id="unique-sorted"),
    case("Unique", [np.array([3, 1, 3], np.int8)], {}, 1, id="unique-y-only"),
    case("Unique", [np.array([[1, 0, 0], [1, 0, 0], [2, 3, 4]])], {"axis": 0}, 4, id="uniq-ax"),
    # TopK / ReverseSequence
    *[
        case("TopK", [rnd(3, 6, dtype=dt, lo=0, hi=4), i64(3)], {"largest": lg, "axis": ax}, 2)
        for dt, lg, ax in [
            (np.float32, 1, -1),
            (np.int32, 0, -1),
            (np.uint8, 1, 0),
            (np.float16, 0, 0),
            (np.int64, 1, 1),
        ]
    ],
    case("ReverseSequence", [rnd(4, 3, 2), i64(4, 1, 2)], id="revseq-t0"),
    case(
        "ReverseSequence",
        [rnd(3, 5, dtype=np.int32), i64(1, 5, 3)],
        {"batch_axis": 0, "time_axis": 1},
        id="revseq-b0",
    ),
    # layout
    *[
        case(
            op,
            [rnd(2, 8, 2, 3) if op == "DepthToSpace" else rnd(2, 3, 4, 6)],
            {"blocksize": 2, "mode": m},
            id=f"{op}-{m}",
        )
        for op in ("DepthToSpace", "SpaceToDepth")
        for m in ("DCR", "CRD")
    ],
    # reinterpretation, crop/pad, caches, folding
    case("BitCast", [rnd(2, 3)], {"to": int(DataType.INT32)}, id="bitcast-f32-i32"),
    case("BitCast", [rnd(4, dtype=np.int16)], {"to": int(DataType.FLOAT16)}, id="bitcast-i16"),
    case("CenterCropPad", [rnd(4, 5), i64(3, 8)], id="ccp-crop-pad"),
    case("CenterCropPad", [rnd(2, 5, 3), i64(2)], {"axes": [-2]}, id="ccp-axes"),
    case("TensorScatter", [rnd(2, 3, 5, 4), rnd(2, 3, 2, 4, seed=1), i64(1, 3)], id="tscatter"),
    case(
        "TensorScatter",
        [rnd(2, 5, 3), rnd(2, 2, 3, seed=1), i64(4, 0)],
        {"mode": "circular", "axis": 1},
        id="tscatter-circular",
    ),
    case("Col2Im", [rnd(1, 4, 4), i64(3, 3), i64(2, 2)], id="col2im"),
    case(
        "Col2Im",
        [rnd(2, 2, 8), i64(4, 4), i64(1, 2)],
        {"pads": [0, 1, 0, 0], "strides": [1, 2], "dilations": [1, 2]},
        id="col2im-attrs",
    ),
    case("MaxUnpool", [rnd(1, 1, 2, 2), i64(0, 3, 10, 15).reshape(1, 1, 2, 2)],
         {"kernel_shape": [2, 2], "strides": [2, 2]}, const=(), id="maxunpool"),  # fmt: skip
    # linear algebra, geometry, signal
    case("Det", [rnd(2, 3, 3)], tol=1e-4, id="det"),
    *[
        case("AffineGrid", [rnd(2, 2, 3), i64(2, 1, 3, 4)], {"align_corners": a}, tol=1e-5)
        for a in (0, 1)
    ],
    case("AffineGrid", [rnd(1, 3, 4), i64(1, 1, 2, 3, 2)], tol=1e-5, id="affine-3d"),
    case("RotaryEmbedding", [rnd(2, 2, 3, 8), rnd(2, 3, 4, seed=1), rnd(2, 3, 4, seed=2)],
         tol=1e-5, id="rope-4d"),  # fmt: skip
    case(
        "RotaryEmbedding",
        [rnd(1, 3, 12), rnd(5, 2, seed=1), rnd(5, 2, seed=2), i64(0, 2, 4).reshape(1, 3)],
        {"num_heads": 2, "rotary_embedding_dim": 4, "interleaved": 1},
        tol=1e-5,
        id="rope-3d-interleaved",
    ),
    case("DFT", [rnd(2, 8, 1), None, np.array(1)], tol=1e-4, id="dft-real"),
    case("DFT", [rnd(2, 8, 2), np.array(6), np.array(-2)], {"onesided": 1}, tol=1e-4),
    case("DFT", [rnd(3, 4, 2), None, np.array(0)], {"inverse": 1}, tol=1e-4, id="idft"),
    *[
        case(op, [np.array(10)], {"periodic": p}, tol=1e-6, const=(0,))
        for op in ("HannWindow", "HammingWindow", "BlackmanWindow")
        for p in (0, 1)
    ],
    case(
        "NonMaxSuppression",
        [
            np.array([[[0, 0, 1, 1], [0, 0.1, 1, 1.1], [0, 2, 1, 3], [1, 1, 0, 0]]], np.float32),
            np.array([[[0.9, 0.8, 0.7, 0.95], [0.1, 0.2, 0.3, 0.4]]], np.float32),
            i64(3),
            np.array([0.5], np.float32),
            np.array([0.15], np.float32),
        ],
        id="nms",
    ),
]


@pytest.mark.parametrize("as_const", [True, False], ids=["const", "dyn"])
@pytest.mark.parametrize(("op", "inputs", "attrs", "n_out", "const", "opts"), CASES)
def test_kernel_matches_reference(
    op: str, inputs: list, attrs: dict, n_out: int, const: tuple, opts: dict, as_const: bool
) -> None:
    """Executor kernel == onnx.reference; shape inference agrees with the result."""
    want = run_reference(op, inputs, attrs, n_out)
    got, node = run_ir(op, inputs, attrs, n_out, const if as_const else ())
    for g, w in zip(got, want, strict=True):
        assert_same(g, w, opts.get("tol", 0.0))
    exact = as_const and op not in DATA_DEPENDENT
    if op == "Compress" and as_const:
        exact = True  # a constant condition fixes the output length
    check_infer(node, got, exact)


@pytest.mark.parametrize("op", ["DepthToSpace", "SpaceToDepth"])
@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_layout_ops_nhwc(op: str, mode: str) -> None:
    """format=NHWC gives the NCHW result transposed to channels-last."""
    x = rnd(2, 8, 2, 4) if op == "DepthToSpace" else rnd(2, 3, 4, 6)
    attrs = {"blocksize": 2, "mode": mode}
    (want,) = run_reference(op, [x], attrs, 1)
    xt = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    (got,), node = run_ir(op, [xt], {**attrs, "format": "NHWC"}, 1, ())
    assert_same(got, want.transpose(0, 2, 3, 1))
    check_infer(node, [got], exact=True)


@pytest.mark.parametrize(
    ("pads", "mode"),
    [((-1, 1, 0, -2), "constant"), ((1, -1, -1, 2), "edge"), ((-1, 0, 0, -1), "reflect")],
)
def test_pad_negative_crops(pads: tuple, mode: str) -> None:
    """Negative pads remove elements (onnx.reference cannot run these: compare by hand)."""
    x = rnd(4, 5)
    (got,), node = run_ir("Pad", [x, i64(*pads)], {"mode": mode}, 1, (1,))
    crop = x[max(-pads[0], 0) : 4 - max(-pads[2], 0), max(-pads[1], 0) : 5 - max(-pads[3], 0)]
    width = [(max(pads[0], 0), max(pads[2], 0)), (max(pads[1], 0), max(pads[3], 0))]
    assert_same(got, np.pad(crop, width, mode=mode))
    check_infer(node, [got], exact=True)


def test_topk_ties_prefer_lower_index() -> None:
    """Equal values keep the lower index first, for largest and smallest."""
    x = np.array([[1, 3, 3, 1, 2]], np.int32)
    for largest, idx in ((1, [1, 2, 4]), (0, [0, 3, 4])):
        (vals, ind), _ = run_ir("TopK", [x, i64(3)], {"largest": largest}, 2, (1,))
        assert ind.tolist() == [idx]
        assert vals.tolist() == [x[0, idx].tolist()]


def test_kernels_do_not_mutate_inputs() -> None:
    """Scatter kernels write into a copy."""
    x = rnd(3, 4)
    before = x.copy()
    run_ir("ScatterElements", [x, np.zeros((1, 4), np.int64), rnd(1, 4)], {}, 1, (1, 2))
    run_ir("ScatterND", [x, np.array([[0]]), rnd(1, 4)], {"reduction": "add"}, 1, (1, 2))
    np.testing.assert_array_equal(x, before)


def test_cast_string_round_trip() -> None:
    """Numbers cast to strings and back (INF/NaN literals included)."""
    x = np.array([1.5, -2.0, np.inf, np.nan], np.float32)
    (s,), _ = run_ir("Cast", [x], {"to": DataType.STRING}, 1, ())
    assert s.dtype == object
    (back,), _ = run_ir("Cast", [s], {"to": DataType.FLOAT}, 1, ())
    np.testing.assert_array_equal(back, x)
    ints = np.array(["100", "-7"], dtype=object)
    (n,), _ = run_ir("Cast", [ints], {"to": DataType.INT64}, 1, ())
    assert n.tolist() == [100, -7] and n.dtype == np.int64


def test_unique_unsorted_along_axis() -> None:
    """sorted=0 along a non-leading axis keeps first-occurrence order of the slices.

    (onnx.reference takes the slices along axis 0 here, so the expectation is by hand.)
    """
    x = np.array([[2, 1, 2, 0], [5, 1, 5, 0]])
    (y, first, inverse, counts), node = run_ir("Unique", [x], {"axis": -1, "sorted": 0}, 4, ())
    assert_same(y, x[:, [0, 1, 3]])
    assert first.tolist() == [0, 1, 3]
    assert inverse.tolist() == [0, 1, 0, 2]
    assert counts.tolist() == [2, 1, 1]
    check_infer(node, [y, first, inverse, counts], exact=False)


@pytest.mark.parametrize("op", ["GatherElements", "ScatterElements"])
def test_elements_negative_axis(op: str) -> None:
    """axis=-1 equals axis=rank-1 (onnx.reference mishandles negative axes here)."""
    x, idx = rnd(2, 3, 4), np.array([[[0, -1]] * 3] * 2)
    ins = [x, idx] if op == "GatherElements" else [x, idx, rnd(2, 3, 2, seed=5)]
    (want,) = run_reference(op, ins, {"axis": 2}, 1)
    (got,), node = run_ir(op, ins, {"axis": -1}, 1, ())
    assert_same(got, want)
    check_infer(node, [got], exact=True)
