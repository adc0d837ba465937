"""NN kernels against onnx.reference (or onnxruntime where the reference lacks a feature).

Each case builds a one-node IR graph, runs it with the executor, checks the
declared shape inference against the results, and compares with the same
node as an ONNX model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

import ir
from converter.executor.registry import UnsupportedKernel
from converter.executor.runtime import Runtime
from ir.dtypes import DataType

RNG = np.random.default_rng(0)
Inputs = list[tuple[str, np.ndarray] | None]


def rand(*shape: int, dtype: Any = np.float32) -> np.ndarray:
    return RNG.standard_normal(shape).astype(dtype)


def run_ir(
    op: str, inputs: Inputs, attrs: dict[str, Any], n_out: int = 1, consts: tuple[str, ...] = ()
) -> list[np.ndarray]:
    """Run one IR node; also check its infer fn against the results."""
    graph = ir.Graph()
    values: list[ir.Value | None] = []
    feeds = {}
    for item in inputs:
        if item is None:
            values.append(None)
            continue
        name, arr = item
        if name in consts:
            values.append(ir.Value(name, const=arr))
        else:
            v = ir.Value(name, DataType.from_numpy(arr.dtype), arr.shape)
            graph.inputs.append(v)
            values.append(v)
            feeds[name] = arr
    node = ir.Node(op, values, n_out, attrs)
    graph.append(node)
    graph.outputs = list(node.outputs)
    result = Runtime(graph).run(feeds)
    outs = [result[v.name] for v in node.outputs]
    inferred = ir.get_op(op).infer(node)
    assert len(inferred) == n_out
    for (dt, shape), out in zip(inferred, outs, strict=True):
        assert shape is not None and len(shape) == out.ndim, f"{op}: inferred {shape}"
        known = tuple(d if d is None else s for d, s in zip(shape, out.shape, strict=True))
        assert shape == known, f"{op}: inferred {shape}, kernel gave {out.shape}"
        assert dt.numpy == out.dtype, f"{op}: inferred {dt}, kernel gave {out.dtype}"
    return outs


def run_onnx(
    op: str, inputs: Inputs, attrs: dict[str, Any], n_out: int = 1, oracle: str = "ref"
) -> list[np.ndarray]:
    names = ["" if item is None else item[0] for item in inputs]
    outs = [f"y{i}" for i in range(n_out)]
    onnx_attrs = {k: v for k, v in attrs.items() if k != "format"}
    node = helper.make_node(op, names, outs, **onnx_attrs)
    feeds = {item[0]: item[1] for item in inputs if item is not None}
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
         for n, a in feeds.items()],
        [helper.make_empty_tensor_value_info(o) for o in outs],
    )
    if oracle == "ref":
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])
        return list(ReferenceEvaluator(model).run(None, feeds))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return list(sess.run(None, feeds))


def check(
    op: str, inputs: Inputs, attrs: dict[str, Any] | None = None, n_out: int = 1,
    oracle: str = "ref", rtol: float = 1e-4, atol: float = 1e-5, consts: tuple[str, ...] = (),
) -> list[np.ndarray]:
    attrs = attrs or {}
    got = run_ir(op, inputs, attrs, n_out, consts)
    want = run_onnx(op, inputs, attrs, n_out, oracle)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype, (g.dtype, w.dtype)
        assert g.shape == w.shape, (g.shape, w.shape)
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
    return got


def check_nhwc(op: str, inputs: Inputs, attrs: dict[str, Any], nchw_out: np.ndarray) -> None:
    """The NHWC variant on channels-last data equals the NCHW result, channels-last."""
    (name, x), *rest = inputs
    moved = [(name, np.ascontiguousarray(np.moveaxis(x, 1, -1))), *rest]
    (got,) = run_ir(op, moved, {**attrs, "format": "NHWC"})[:1]
    np.testing.assert_allclose(got, np.moveaxis(nchw_out, 1, -1), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------- Conv

CONV2D = [
    dict(kernel_shape=[3, 3]),
    dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    dict(kernel_shape=[3, 2], strides=[2, 1], pads=[1, 0, 2, 1]),
    dict(kernel_shape=[3, 3], dilations=[2, 2], pads=[2, 2, 2, 2]),
    dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
    dict(kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_LOWER"),
    dict(kernel_shape=[4, 4], strides=[3, 3], auto_pad="SAME_LOWER"),
    dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="VALID"),
    dict(kernel_shape=[1, 1]),
    dict(kernel_shape=[1, 1], strides=[2, 2]),
    dict(kernel_shape=[3, 3], group=2, pads=[1, 1, 1, 1]),
    dict(kernel_shape=[1, 1], group=2),
]


@pytest.mark.parametrize("attrs", CONV2D)
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d(attrs: dict[str, Any], bias: bool) -> None:
    g, k = attrs.get("group", 1), attrs["kernel_shape"]
    x, w = rand(2, 4, 9, 8), rand(6, 4 // g, *k)
    inputs: Inputs = [("x", x), ("w", w), ("b", rand(6)) if bias else None]
    (y,) = check("Conv", inputs, attrs, consts=("w", "b"))
    check_nhwc("Conv", inputs, attrs, y)


@pytest.mark.parametrize(
    "attrs",
    [
        dict(kernel_shape=[3, 3], group=4, pads=[1, 1, 1, 1]),
        dict(kernel_shape=[3, 3], group=4, strides=[2, 2], auto_pad="SAME_UPPER"),
        dict(kernel_shape=[5, 3], group=4, dilations=[1, 2], pads=[2, 1, 2, 3]),
    ],
)
@pytest.mark.parametrize("mult", [1, 2])
def test_conv_depthwise(attrs: dict[str, Any], mult: int) -> None:
    x, w = rand(2, 4, 9, 10), rand(4 * mult, 1, *attrs["kernel_shape"])
    inputs: Inputs = [("x", x), ("w", w), ("b", rand(4 * mult))]
    (y,) = check("Conv", inputs, attrs)
    check_nhwc("Conv", inputs, attrs, y)


@pytest.mark.parametrize(
    ("xshape", "wshape", "attrs"),
    [
        ((2, 3, 11), (4, 3, 3), dict(strides=[2], pads=[1, 1])),
        ((1, 4, 10), (4, 1, 3), dict(group=4, dilations=[2], auto_pad="SAME_UPPER")),
        ((1, 2, 5, 6, 4), (3, 2, 3, 3, 2), dict(pads=[1, 1, 0, 1, 1, 1])),
        ((1, 4, 5, 6, 5), (4, 2, 2, 3, 3), dict(group=2, strides=[2, 1, 2])),
    ],
)
def test_conv_1d_3d(xshape: tuple, wshape: tuple, attrs: dict[str, Any]) -> None:
    inputs: Inputs = [("x", rand(*xshape)), ("w", rand(*wshape)), None]
    (y,) = check("Conv", inputs, attrs)
    check_nhwc("Conv", inputs, attrs, y)


CONV_WIDE = [
    dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    dict(kernel_shape=[7, 7], strides=[2, 2], pads=[3, 3, 3, 3]),
    dict(kernel_shape=[3, 3], dilations=[2, 3], pads=[2, 1, 0, 3]),
    dict(kernel_shape=[3, 5], strides=[1, 3], pads=[0, 2, 1, 1]),
    dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER", group=2),
    dict(kernel_shape=[2, 4], strides=[3, 2], dilations=[2, 1], auto_pad="SAME_LOWER"),
]


@pytest.mark.parametrize("attrs", CONV_WIDE)
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("path", ["rows", "phases"])
def test_conv2d_wide_inputs_paths(attrs: dict[str, Any], batch: int, path: str) -> None:
    """Wide rows: row-tap GEMMs when outputs per group are few next to kw x inputs,
    else the flat (polyphase im2col) path, cheap enough to be chosen."""
    from converter.executor.kernels import nn as kernels

    g, k = attrs.get("group", 1), attrs["kernel_shape"]
    m = 6 if path == "rows" else 8 * k[1] * g
    x, w = rand(batch, 4, 11, 80), rand(m, 4 // g, *k)
    inputs: Inputs = [("x", x), ("w", w), ("b", rand(m))]
    (y,) = check("Conv", inputs, attrs, consts=("w", "b"), atol=1e-4)  # |y| ~ 14 for 7x7
    check_nhwc("Conv", inputs, attrs, y)
    ctx = _FakeCtx({"strides": None, "dilations": None, "pads": None, "auto_pad": "NOTSET",
                    "group": 1, **attrs})
    plan = kernels._ConvPlan(ctx, x.shape, w)
    assert (plan.rows if path == "rows" else plan.phases) is not None


class _FakeCtx:
    def __init__(self, attrs: dict[str, Any]) -> None:
        self.attrs, self.cache = attrs, {}

    def attr(self, name: str) -> Any:
        return self.attrs[name]


def test_conv_negative_pads_crop() -> None:
    x, w = rand(1, 2, 9, 30), rand(3, 2, 3, 3)
    dw = rand(2, 1, 3, 3)
    for weight, group in ((w, 1), (dw, 2)):
        attrs = dict(pads=[-1, 1, 0, -2], group=group)
        got = run_ir("Conv", [("x", x), ("w", weight)], attrs)[0]
        xp = np.pad(x, ((0, 0), (0, 0), (0, 0), (1, 0)))[:, :, 1:, :-2]
        want = run_onnx("Conv", [("x", xp), ("w", weight)], dict(group=group))[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_conv_float16_stays_float16() -> None:
    x, w = rand(1, 2, 5, 5, dtype=np.float16), rand(3, 2, 3, 3, dtype=np.float16)
    check("Conv", [("x", x), ("w", w)], {}, rtol=1e-2, atol=1e-2)


def test_conv_weight_cache_follows_weight_object() -> None:
    graph = ir.Graph()
    x = ir.Value("x", DataType.FLOAT, (1, 2, 4, 4))
    w = ir.Value("w", DataType.FLOAT, (3, 2, 3, 3))
    graph.inputs = [x, w]
    node = graph.append(ir.Node("Conv", [x, w], 1, {"pads": [1, 1, 1, 1]}))
    graph.outputs = list(node.outputs)
    rt = Runtime(graph)
    xa = rand(1, 2, 4, 4)
    w1, w2 = rand(3, 2, 3, 3), rand(3, 2, 3, 3)
    y1 = rt.run({"x": xa, "w": w1})[node.outputs[0].name]
    y2 = rt.run({"x": xa, "w": w2})[node.outputs[0].name]
    ref = run_onnx("Conv", [("x", xa), ("w", w2)], {"pads": [1, 1, 1, 1]})[0]
    np.testing.assert_allclose(y2, ref, rtol=1e-4, atol=1e-5)
    assert not np.allclose(y1, y2)


CONVT = [
    dict(kernel_shape=[3, 3]),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1]),
    dict(kernel_shape=[2, 3], strides=[2, 3], dilations=[2, 1], pads=[0, 1, 1, 0]),
    dict(kernel_shape=[3, 3], strides=[2, 2], output_shape=[10, 9]),
    dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
    dict(kernel_shape=[4, 4], strides=[2, 2], auto_pad="SAME_LOWER"),
    dict(kernel_shape=[3, 3], strides=[2, 2], group=2, pads=[1, 0, 1, 0]),
]


@pytest.mark.parametrize("attrs", CONVT)
def test_conv_transpose(attrs: dict[str, Any]) -> None:
    g = attrs.get("group", 1)
    x, w = rand(2, 4, 4, 5), rand(4, 6 // g, *attrs["kernel_shape"])
    inputs: Inputs = [("x", x), ("w", w), ("b", rand(6))]
    (y,) = check("ConvTranspose", inputs, attrs, oracle="ort")
    check_nhwc("ConvTranspose", inputs, attrs, y)


def test_conv_transpose_1d_reference() -> None:
    x, w = rand(1, 3, 6), rand(3, 2, 3)
    check("ConvTranspose", [("x", x), ("w", w)], dict(strides=[2], pads=[1, 0]))


# ------------------------------------------------------------------------- pools

POOLS = [
    dict(kernel_shape=[2, 2], strides=[2, 2]),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    dict(kernel_shape=[3, 2], strides=[1, 2], pads=[1, 0, 1, 1]),
    dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
    dict(kernel_shape=[2, 3], strides=[2, 2], auto_pad="SAME_LOWER"),
    dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="VALID"),
    dict(kernel_shape=[2, 2], dilations=[2, 2], pads=[1, 1, 1, 1]),
]
CEIL_POOLS = [
    dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
    dict(kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 0, 0], ceil_mode=1),
    dict(kernel_shape=[3, 3], strides=[3, 2], pads=[1, 1, 1, 1], ceil_mode=1),
]


@pytest.mark.parametrize("attrs", POOLS)
def test_max_pool(attrs: dict[str, Any]) -> None:
    inputs: Inputs = [("x", rand(2, 3, 9, 8))]
    # onnx.reference's MaxPool gets SAME output sizes wrong: use onnxruntime there
    (y,) = check("MaxPool", inputs, attrs, oracle="ort" if "auto_pad" in attrs else "ref")
    check_nhwc("MaxPool", inputs, attrs, y)


@pytest.mark.parametrize("attrs", CEIL_POOLS)
@pytest.mark.parametrize("op", ["MaxPool", "AveragePool", "LpPool"])
def test_pool_ceil_mode(op: str, attrs: dict[str, Any]) -> None:
    inputs: Inputs = [("x", rand(1, 2, 8, 9))]
    (y,) = check(op, inputs, attrs, oracle="ort")
    check_nhwc(op, inputs, attrs, y)


@pytest.mark.parametrize("include", [0, 1])
def test_average_pool_ceil_count_include_pad(include: int) -> None:
    attrs = dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1,
                 count_include_pad=include)
    check("AveragePool", [("x", rand(1, 2, 8, 7))], attrs, oracle="ort")


@pytest.mark.parametrize("storage_order", [0, 1])
@pytest.mark.parametrize("attrs", POOLS[:3])
def test_max_pool_indices(attrs: dict[str, Any], storage_order: int) -> None:
    attrs = {**attrs, "storage_order": storage_order}
    check("MaxPool", [("x", rand(2, 3, 7, 6))], attrs, n_out=2, oracle="ort")


def test_max_pool_int8_and_1d_3d() -> None:
    x = RNG.integers(-128, 127, size=(1, 2, 6, 6), dtype=np.int8)
    check("MaxPool", [("x", x)], dict(kernel_shape=[2, 2], pads=[1, 1, 0, 0]), oracle="ort")
    check("MaxPool", [("x", rand(2, 3, 10))], dict(kernel_shape=[3], strides=[2], pads=[1, 1]))
    check("MaxPool", [("x", rand(1, 2, 5, 6, 4))], dict(kernel_shape=[2, 3, 2], strides=[2, 2, 1]))


@pytest.mark.parametrize("attrs", POOLS[:6])
@pytest.mark.parametrize("include", [0, 1])
def test_average_pool(attrs: dict[str, Any], include: int) -> None:
    attrs = {**attrs, "count_include_pad": include}
    inputs: Inputs = [("x", rand(2, 3, 9, 8))]
    (y,) = check("AveragePool", inputs, attrs)
    check_nhwc("AveragePool", inputs, attrs, y)


def test_average_pool_1d_3d() -> None:
    check("AveragePool", [("x", rand(2, 3, 10))], dict(kernel_shape=[3], pads=[1, 1]))
    check("AveragePool", [("x", rand(1, 2, 5, 6, 4))], dict(kernel_shape=[2, 2, 2]))


@pytest.mark.parametrize("p", [1, 2, 3])
@pytest.mark.parametrize("attrs", POOLS[:3])
def test_lp_pool(attrs: dict[str, Any], p: int) -> None:
    check("LpPool", [("x", rand(2, 3, 9, 8))], {**attrs, "p": p})


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"])
@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (2, 3, 7), (1, 2, 3, 4, 2)])
def test_global_pools(op: str, shape: tuple) -> None:
    inputs: Inputs = [("x", rand(*shape))]
    (y,) = check(op, inputs, oracle="ort")  # the reference lacks GlobalLpPool, breaks 1-D
    check_nhwc(op, inputs, {}, y)


# ------------------------------------------------------------------------- normalization


def test_batch_norm() -> None:
    x = rand(2, 4, 5, 3)
    inputs: Inputs = [("x", x), ("s", rand(4)), ("b", rand(4)), ("m", rand(4)),
                      ("v", np.abs(rand(4)) + 0.1)]
    (y,) = check("BatchNormalization", inputs, {"epsilon": 1e-3}, consts=("s", "b", "m", "v"))
    check_nhwc("BatchNormalization", inputs, {"epsilon": 1e-3}, y)
    with pytest.raises(UnsupportedKernel):
        run_ir("BatchNormalization", inputs, {"training_mode": 1})


def test_instance_norm() -> None:
    inputs: Inputs = [("x", rand(2, 3, 5, 4)), ("s", rand(3)), ("b", rand(3))]
    (y,) = check("InstanceNormalization", inputs, {"epsilon": 1e-4})
    check_nhwc("InstanceNormalization", inputs, {"epsilon": 1e-4}, y)


@pytest.mark.parametrize(("axis", "bias", "n_out"), [(-1, True, 3), (1, False, 1), (2, True, 2)])
def test_layer_norm(axis: int, bias: bool, n_out: int) -> None:
    x = rand(2, 3, 4, 5)
    norm_shape = x.shape[axis % 4:]
    b = ("b", rand(*norm_shape)) if bias else None
    inputs: Inputs = [("x", x), ("s", rand(*norm_shape)), b]
    check("LayerNormalization", inputs, {"axis": axis}, n_out=n_out)


def test_layer_norm_float16_stash() -> None:
    x = rand(2, 8, dtype=np.float16)
    inputs: Inputs = [("x", x), ("s", rand(8, dtype=np.float16)), ("b", rand(8, dtype=np.float16))]
    (y, mean) = run_ir("LayerNormalization", inputs, {}, n_out=2)
    assert y.dtype == np.float16 and mean.dtype == np.float32
    want = run_onnx("LayerNormalization", inputs, {}, n_out=1)[0]
    np.testing.assert_allclose(y.astype(np.float32), want.astype(np.float32), atol=1e-2)


@pytest.mark.parametrize("groups", [1, 2, 6])
def test_group_norm(groups: int) -> None:
    inputs: Inputs = [("x", rand(2, 6, 4, 3)), ("s", rand(6)), ("b", rand(6))]
    attrs = {"num_groups": groups, "epsilon": 1e-4}
    (y,) = check("GroupNormalization", inputs, attrs, oracle="ref")
    check_nhwc("GroupNormalization", inputs, attrs, y)


@pytest.mark.parametrize("size", [1, 3, 5])  # onnxruntime wants odd sizes
def test_lrn(size: int) -> None:
    inputs: Inputs = [("x", rand(2, 6, 4, 3))]
    attrs = {"size": size, "alpha": 1e-3, "beta": 0.5, "bias": 2.0}
    (y,) = check("LRN", inputs, attrs, oracle="ort")  # the reference LRN loops over batch
    check_nhwc("LRN", inputs, attrs, y)


@pytest.mark.parametrize("axes", [None, [0, 2, 3], [1], [2, 3]])
def test_mvn(axes: list[int] | None) -> None:
    attrs = {} if axes is None else {"axes": axes}
    check("MeanVarianceNormalization", [("x", rand(2, 3, 4, 5))], attrs, atol=1e-4)


# ------------------------------------------------------------------------- matmul family


@pytest.mark.parametrize("ta", [0, 1])
@pytest.mark.parametrize("tb", [0, 1])
@pytest.mark.parametrize("c_shape", [None, (5,), (3, 5), (1, 1)])
def test_gemm(ta: int, tb: int, c_shape: tuple | None) -> None:
    a = rand(*((4, 3) if ta else (3, 4)))
    b = rand(*((5, 4) if tb else (4, 5)))
    inputs: Inputs = [("a", a), ("b", b), ("c", rand(*c_shape)) if c_shape else None]
    check("Gemm", inputs, {"transA": ta, "transB": tb, "alpha": 0.5, "beta": 2.0})


@pytest.mark.parametrize(
    ("sa", "sb"),
    [((3, 4), (4, 5)), ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)),
     ((2, 1, 3, 4), (5, 4, 6)), ((2, 3, 4), (4, 2)), ((4,), (2, 4, 3))],
)
def test_matmul(sa: tuple, sb: tuple) -> None:
    check("MatMul", [("a", rand(*sa)), ("b", rand(*sb))])


def test_matmul_int_and_half() -> None:
    a = RNG.integers(-5, 5, size=(3, 4)).astype(np.int32)
    b = RNG.integers(-5, 5, size=(4, 2)).astype(np.int32)
    check("MatMul", [("a", a), ("b", b)])
    check("MatMul", [("a", rand(3, 4, dtype=np.float16)), ("b", rand(4, 2, dtype=np.float16))],
          rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
@pytest.mark.parametrize("axis", [None, 0, 1, -2])
def test_softmax_family(op: str, axis: int | None) -> None:
    attrs = {} if axis is None else {"axis": axis}
    check(op, [("x", rand(3, 4, 5))], attrs)


def test_hardmax_ties_pick_first() -> None:
    x = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]], dtype=np.float32)
    check("Hardmax", [("x", x)])


def test_dropout_inference() -> None:
    x = rand(3, 4)
    y, mask = check("Dropout", [("x", x)], n_out=2)
    np.testing.assert_array_equal(y, x)
    assert mask.all()
    ratio, train = np.array(0.3, np.float32), np.array(False)
    check("Dropout", [("x", x), ("r", ratio), ("t", train)], n_out=2)
    y, mask = run_ir("Dropout", [("x", x), ("r", ratio), ("t", np.array(True))], {"seed": 1}, 2)
    np.testing.assert_allclose(y[mask], x[mask] / 0.7, rtol=1e-6)
    assert (y[~mask] == 0).all()


@pytest.mark.parametrize(
    ("eq", "shapes"),
    [("ij,jk->ik", [(3, 4), (4, 5)]), ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
     ("ii->i", [(4, 4)]), ("ij->", [(3, 4)]), ("...ij,...jk", [(2, 3, 4), (4, 2)]),
     ("i,j->ij", [(3,), (4,)]), ("bhqd,bhkd->bhqk", [(1, 2, 3, 4), (1, 2, 5, 4)]),
     ("ij", [(2, 3)])],
)
def test_einsum(eq: str, shapes: list[tuple]) -> None:
    inputs: Inputs = [(f"x{i}", rand(*s)) for i, s in enumerate(shapes)]
    check("Einsum", inputs, {"equation": eq})


# ------------------------------------------------------------------------- RNNs

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def rnn_inputs(
    op: str, direction: str, *, bias: bool = True, init: bool = True, lens: bool = False,
    peep: bool = False, layout: int = 0, t: int = 5, b: int = 3, i: int = 4, h: int = 3,
) -> Inputs:
    d = 2 if direction == "bidirectional" else 1
    g = GATES[op]
    x = rand(b, t, i) if layout else rand(t, b, i)
    state = (b, d, h) if layout else (d, b, h)
    inputs: Inputs = [
        ("x", x), ("w", rand(d, g * h, i) * 0.5), ("r", rand(d, g * h, h) * 0.5),
        ("b", rand(d, 2 * g * h) * 0.5) if bias else None,
        ("lens", np.array([t, 2, 4][:b], dtype=np.int32)) if lens else None,
        ("h0", rand(*state)) if init else None,
    ]
    if op == "LSTM":
        inputs += [("c0", rand(*state)) if init else None, ("p", rand(d, 3 * h)) if peep else None]
    return inputs


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_rnn_family_reference(op: str, direction: str) -> None:
    n_out = 3 if op == "LSTM" else 2
    attrs = {"hidden_size": 3, "direction": direction}
    check(op, rnn_inputs(op, direction), attrs, n_out=n_out, oracle="ref")


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_rnn_family_sequence_lens_and_layout(op: str, direction: str) -> None:
    n_out = 3 if op == "LSTM" else 2
    attrs = {"hidden_size": 3, "direction": direction}
    inputs = rnn_inputs(op, direction, lens=True, peep=True)
    outs = check(op, inputs, attrs, n_out=n_out, oracle="ort")
    # layout=1 (batch first; onnxruntime lacks it) must be the transposed layout=0 result
    batch_first = [
        None if item is None else
        (item[0], item[1].transpose(1, 0, 2) if item[0] in ("x", "h0", "c0") else item[1])
        for item in inputs
    ]
    got = run_ir(op, batch_first, {**attrs, "layout": 1}, n_out)
    np.testing.assert_allclose(got[0], outs[0].transpose(2, 0, 1, 3), rtol=1e-6)
    for g, w in zip(got[1:], outs[1:], strict=True):
        np.testing.assert_allclose(g, w.transpose(1, 0, 2), rtol=1e-6)


@pytest.mark.parametrize(
    ("op", "attrs"),
    [
        ("GRU", {"linear_before_reset": 1}),
        ("GRU", {"clip": 0.5}),
        ("LSTM", {"clip": 0.7, "input_forget": 1}),
        ("RNN", {"activations": ["Relu"]}),
        ("LSTM", {"activations": ["HardSigmoid", "Tanh", "Softsign"],
                  "activation_alpha": [0.3], "activation_beta": [0.4]}),
        ("GRU", {"activations": ["Sigmoid", "LeakyRelu", "Sigmoid", "Tanh"],
                 "activation_alpha": [0.2], "direction": "bidirectional"}),
    ],
)
def test_rnn_family_options(op: str, attrs: dict[str, Any]) -> None:
    attrs = {"hidden_size": 3, **attrs}
    n_out = 3 if op == "LSTM" else 2
    inputs = rnn_inputs(op, attrs.get("direction", "forward"), init=True)
    check(op, inputs, attrs, n_out=n_out, oracle="ort")


def test_lstm_only_y_and_no_optionals() -> None:
    inputs = rnn_inputs("LSTM", "forward", bias=False, init=False)[:3]
    check("LSTM", inputs, {"hidden_size": 3}, n_out=1)


# ------------------------------------------------------------------------- Resize

RESIZE = [
    dict(mode="nearest"),
    dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
    dict(mode="nearest", coordinate_transformation_mode="align_corners",
         nearest_mode="round_prefer_ceil"),
    dict(mode="nearest", coordinate_transformation_mode="half_pixel", nearest_mode="ceil"),
    dict(mode="linear"),
    dict(mode="linear", coordinate_transformation_mode="align_corners"),
    dict(mode="linear", coordinate_transformation_mode="asymmetric"),
    dict(mode="linear", coordinate_transformation_mode="pytorch_half_pixel"),
    dict(mode="linear", coordinate_transformation_mode="half_pixel_symmetric"),
    dict(mode="cubic"),
    dict(mode="cubic", cubic_coeff_a=-0.5, exclude_outside=1),
    dict(mode="cubic", coordinate_transformation_mode="align_corners"),
]


@pytest.mark.parametrize("attrs", RESIZE)
@pytest.mark.parametrize("scales", [[1.0, 1.0, 2.0, 1.5], [1.0, 1.0, 0.6, 0.8]])
def test_resize_scales(attrs: dict[str, Any], scales: list[float]) -> None:
    x = rand(1, 2, 5, 6)
    inputs: Inputs = [("x", x), None, ("scales", np.array(scales, np.float32))]
    # align_corners with scales: the ONNX spec (and onnx.reference) map with the
    # unrounded length in * scale; onnxruntime uses the integer output length and
    # differs for fractional scales. The IR follows the spec.
    (y,) = check("Resize", inputs, attrs, consts=("scales",), oracle="ref")
    assert y.shape == (1, 2, int(5 * scales[2]), int(6 * scales[3]))


@pytest.mark.parametrize("policy", ["stretch", "not_larger", "not_smaller"])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_sizes_axes_policy(policy: str, mode: str) -> None:
    x = rand(1, 2, 4, 6)
    inputs: Inputs = [("x", x), None, None, ("sizes", np.array([7, 9], np.int64))]
    attrs = {"mode": mode, "axes": [2, 3], "keep_aspect_ratio_policy": policy}
    check("Resize", inputs, attrs, consts=("sizes",))


def test_resize_tf_crop_and_resize() -> None:
    x = rand(1, 1, 5, 5)
    roi = np.array([0, 0, 0.2, -0.1, 1, 1, 0.9, 1.2], np.float32)
    inputs: Inputs = [("x", x), ("roi", roi), None, ("sizes", np.array([1, 1, 4, 6], np.int64))]
    attrs = {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize",
             "extrapolation_value": 7.0}
    (y,) = check("Resize", inputs, attrs)
    assert (y == 7.0).any()


def test_resize_uint8_nearest_and_antialias() -> None:
    x = RNG.integers(0, 255, size=(1, 1, 4, 4), dtype=np.uint8)
    scales = np.array([1, 1, 2, 2], np.float32)
    check("Resize", [("x", x), None, ("s", scales)])
    with pytest.raises(UnsupportedKernel):
        run_ir("Resize", [("x", rand(1, 1, 4, 4)), None, ("s", scales * 0.5)],
               {"mode": "linear", "antialias": 1})


# ------------------------------------------------------------------------- GridSample


@pytest.mark.parametrize("mode", ["linear", "nearest"])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align_corners", [0, 1])
def test_grid_sample(mode: str, padding_mode: str, align_corners: int) -> None:
    x, grid = rand(2, 3, 4, 5), RNG.uniform(-1.3, 1.3, size=(2, 6, 7, 2)).astype(np.float32)
    attrs = {"mode": mode, "padding_mode": padding_mode, "align_corners": align_corners}
    check("GridSample", [("x", x), ("grid", grid)], attrs)


def test_every_declared_nn_op_has_a_kernel() -> None:
    from converter.executor.kernels import nn as kernels
    from ir.ops import nn as decls

    assert {o.name for o in decls.OPS} == set(kernels.KERNELS)
    assert isinstance(onnx.__version__, str)


def test_donated_inputs_are_normalized_in_place_correctly() -> None:
    """Relu -> BatchNormalization -> Softmax -> LayerNormalization, each input donated."""
    graph = ir.Graph()
    x = ir.Value("x", DataType.FLOAT, (2, 3, 4, 5))
    graph.inputs = [x]
    c = 3
    bn = [rand(c), rand(c), rand(c), np.abs(rand(c)) + 0.5]
    scale, bias = rand(5), rand(5)
    relu = graph.append(ir.Node("Relu", [x], 1, {}))
    bnode = graph.append(ir.Node(
        "BatchNormalization",
        [relu.outputs[0], *(ir.Value(f"bn{i}", const=a) for i, a in enumerate(bn))], 1, {}))
    soft = graph.append(ir.Node("Softmax", [bnode.outputs[0]], 1, {"axis": 1}))
    ln = graph.append(ir.Node(
        "LayerNormalization",
        [soft.outputs[0], ir.Value("s", const=scale), ir.Value("b", const=bias)], 1, {}))
    graph.outputs = list(ln.outputs)
    xa = rand(2, 3, 4, 5)
    x0 = xa.copy()
    (got,) = Runtime(graph).run({"x": xa}).values()
    r = np.maximum(xa, 0)
    a = bn[0] / np.sqrt(bn[3] + 1e-5)
    y = r * a.reshape(c, 1, 1) + (bn[1] - bn[2] * a).reshape(c, 1, 1)
    e = np.exp(y - y.max(axis=1, keepdims=True))
    s = e / e.sum(axis=1, keepdims=True)
    mu, var = s.mean(axis=-1, keepdims=True), s.var(axis=-1, keepdims=True)
    want = (s - mu) / np.sqrt(var + 1e-5) * scale + bias
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(xa, x0)
