"""TF front end, op by op: small tf.functions frozen to .pb, converted and verified
against TensorFlow itself (converter.convert(..., verify=True), cosine >= 0.9999)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tensorflow")

import converter  # noqa: E402
from benchmarks.models_tf import freeze_function, keras  # noqa: E402
from parsers.errors import UnsupportedModelError  # noqa: E402
from parsers.tf import parse_tf  # noqa: E402
from parsers.tf.ops import supported_ops  # noqa: E402

F32 = "float32"
IMG = ((1, 8, 8, 4), F32)
SEQ = ((2, 5, 6), F32)


@pytest.fixture(scope="module")
def tf() -> Any:
    keras()
    import tensorflow

    return tensorflow


def _rng_filter(shape: tuple[int, ...], seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _conv(tf: Any, x: Any) -> Any:
    w = tf.constant(_rng_filter((3, 3, 4, 6)))
    a = tf.nn.conv2d(x, w, strides=2, padding="SAME")
    b = tf.nn.conv2d(x, w, strides=1, padding="VALID", dilations=2)
    c = tf.nn.conv2d(x, w, strides=1, padding=[[0, 0], [1, 2], [0, 1], [0, 0]])
    return tf.reduce_sum(a) + tf.reduce_sum(b) + tf.nn.bias_add(c, tf.range(6.0))


def _depthwise(tf: Any, x: Any) -> Any:
    w = tf.constant(_rng_filter((3, 3, 4, 2)))
    return tf.nn.relu6(tf.nn.depthwise_conv2d(x, w, strides=[1, 2, 2, 1], padding="SAME"))


def _deconv(tf: Any, x: Any) -> Any:
    w = tf.constant(_rng_filter((3, 3, 5, 4)))
    a = tf.nn.conv2d_transpose(x, w, [1, 17, 17, 5], strides=2, padding="VALID")
    b = tf.nn.conv2d_transpose(x, w, [1, 16, 16, 5], strides=2, padding="SAME")
    return tf.reduce_mean(a, axis=[1, 2]) + tf.reduce_mean(b, axis=[1, 2])


def _pool_bn(tf: Any, x: Any) -> Any:
    c = tf.constant
    y, _, _ = tf.compat.v1.nn.fused_batch_norm(
        x, c([1.0, 2, 3, 4]), c([0.1, 0.2, 0.3, 0.4]), c([0.5, 0, -1, 2]),
        c([1.0, 2, 0.5, 3]), epsilon=1e-3, is_training=False,
    )  # fmt: skip
    a = tf.nn.max_pool2d(y, 3, 2, "VALID")
    b = tf.nn.avg_pool2d(y, 3, 2, "SAME")
    return tf.concat([tf.reshape(a, [-1]), tf.reshape(b, [-1])], 0)


def _resize(tf: Any, x: Any) -> Any:
    a = tf.image.resize(x, [16, 12], method="nearest")
    b = tf.compat.v1.image.resize_bilinear(x, [13, 11], align_corners=True)
    c = tf.compat.v1.image.resize_nearest_neighbor(x, [16, 16])
    d = tf.image.resize(x, [5, 6], method="bilinear")
    return [a, b, c, d]


def _space(tf: Any, x: Any) -> Any:
    return tf.nn.depth_to_space(tf.nn.space_to_depth(x, 2) * 2.0, 2)


def _strided(tf: Any, x: Any) -> Any:
    return [x[1:, ..., ::2], x[:, tf.newaxis, 0], x[..., -1], x[::-1, 1:4], x[0, -2:, 3]]


def _slices(tf: Any, x: Any) -> Any:
    a = tf.slice(x, [0, 1, 0], [-1, 2, 4])
    b = tf.gather(x, [4, 0, 2], axis=1)
    c = tf.reverse(x, [1, 2])
    d = tf.gather_nd(x, [[0, 1], [1, 3]])
    return [a, b, c, d]


def _pads(tf: Any, x: Any) -> Any:
    p = [[0, 0], [1, 2], [2, 1]]
    return [tf.pad(x, p), tf.pad(x, p, mode="REFLECT"), tf.pad(x, p, constant_values=3.0)]


def _shapes(tf: Any, x: Any) -> Any:
    a = tf.reshape(x, [-1, 3])
    b = tf.squeeze(tf.expand_dims(x, 1), [1])
    c = tf.transpose(x, [2, 0, 1])
    d = tf.tile(x[:, :1], [1, 3, 1])
    e = tf.broadcast_to(x[:1, :1, :], [2, 4, 6])
    return [a, b, c, d, e]


def _dynamic(tf: Any, x: Any) -> Any:
    n = tf.shape(x)[1]
    r = tf.cast(tf.range(n), tf.float32)
    f = tf.fill(tf.shape(x), 2.0)
    z = tf.zeros_like(x) + tf.ones_like(x)
    return x * f + r[None, :, None] + z + tf.cast(tf.size(x), tf.float32)


def _lists(tf: Any, x: Any) -> Any:
    parts = tf.unstack(x, axis=1)
    a = tf.stack(parts[::-1], axis=-1)
    s1, s2 = tf.split(x, 2, axis=2)
    v1, v2, v3 = tf.split(x, [1, -1, 2], axis=1)
    return [a, tf.concat([s2, s1], axis=-1), v1 + 1, v2 * 2, v3 - 1]


def _math(tf: Any, x: Any) -> Any:
    p = tf.abs(x) + 1.0
    outs = [
        tf.nn.elu(x), tf.nn.selu(x), tf.nn.leaky_relu(x, 0.3), tf.nn.softplus(x),
        tf.nn.softsign(x), tf.nn.log_softmax(x), tf.nn.softmax(x), tf.math.erf(x),
        tf.math.erfc(x), tf.sigmoid(x), tf.tanh(x), tf.exp(x), tf.math.log(p),
        tf.pow(p, 1.5), tf.sqrt(p), tf.math.rsqrt(p), tf.square(x),
        tf.math.squared_difference(x, 0.5), tf.math.floordiv(x, 0.7),
        tf.math.floormod(x, 0.7), tf.minimum(x, 0.2), tf.maximum(x, -0.2),
        tf.math.log1p(p), tf.math.expm1(x), tf.math.reciprocal(p), tf.abs(x), -x,
        tf.clip_by_value(x, -0.5, 0.5), tf.math.divide_no_nan(x, tf.round(x)),
        tf.math.cumsum(x, axis=1, exclusive=True), tf.math.add_n([x, x, p]),
    ]  # fmt: skip
    w = tf.range(1.0, 7.0)
    return [tf.reduce_sum(o * w, axis=-1) for o in outs]


def _reduce(tf: Any, x: Any) -> Any:
    return [
        tf.reduce_mean(x, axis=[1, 2], keepdims=True), tf.reduce_sum(x, axis=1),
        tf.reduce_max(x, axis=-1), tf.reduce_min(x, axis=0), tf.reduce_prod(x, axis=2),
        tf.cast(tf.argmax(x, axis=2), tf.float32), tf.argmin(x, axis=1, output_type=tf.int32),
        tf.cast(tf.reduce_any(x > 1.0, axis=1), tf.float32),
        tf.cast(tf.reduce_all(x > -1.0, axis=2), tf.float32),
    ]  # fmt: skip


def _matmuls(tf: Any, x: Any) -> Any:
    w = tf.constant(_rng_filter((6, 6)))
    m = x[0]
    a = tf.matmul(m, w, transpose_b=True)
    b = tf.matmul(m, m, transpose_a=True)
    c = tf.matmul(x, x, adjoint_b=True)
    d = tf.einsum("bij,bkj->bik", x, x)
    e = tf.einsum("bij,jk->bik", x, w)
    return [a, b, c, d, e]


def _select(tf: Any, x: Any) -> Any:
    a = tf.where(x > 0, x, -2.0 * x)
    b = tf.compat.v1.where(x[:, 0, 0] > 0, x, x * 3.0)
    c = tf.cast(tf.logical_and(x > 0, tf.logical_not(x > 1)), tf.float32)
    d = tf.cast(tf.not_equal(tf.round(x), 0.0), tf.float32)
    e = tf.math.top_k(x, 2)
    f = tf.one_hot(tf.argmax(x, axis=-1), 6, 2.0, -1.0)
    return [a, b, c, d, e.values, e.indices, f]


def _cond(tf: Any, x: Any) -> Any:
    return tf.cond(tf.reduce_sum(x) > 0.0, lambda: x * 2.0, lambda: tf.nn.relu(x) - 1.0)


def _while(tf: Any, x: Any) -> Any:
    def body(i: Any, acc: Any) -> Any:
        return i + 1, acc * 0.5 + tf.sin(acc)

    return tf.while_loop(lambda i, acc: i < 4, body, [tf.constant(0), x])[1]


CASES: dict[str, tuple[Callable[..., Any], tuple[Any, ...]]] = {
    "conv": (_conv, IMG), "depthwise": (_depthwise, IMG), "deconv": (_deconv, IMG),
    "pool_bn": (_pool_bn, IMG), "resize": (_resize, IMG), "space": (_space, IMG),
    "strided_slice": (_strided, SEQ), "slices": (_slices, SEQ), "pads": (_pads, SEQ),
    "shapes": (_shapes, SEQ), "dynamic": (_dynamic, SEQ), "lists": (_lists, SEQ),
    "math": (_math, SEQ), "reduce": (_reduce, SEQ), "matmul": (_matmuls, SEQ),
    "select": (_select, SEQ), "cond": (_cond, SEQ), "while": (_while, SEQ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_op_matches_tensorflow(tf: Any, tmp_path: Any, case: str) -> None:
    fn, spec = CASES[case]
    pb = freeze_function(lambda x: fn(tf, x), [spec], tmp_path / f"{case}.pb")
    result = converter.convert(pb, fmk="TF", output=tmp_path / f"{case}.ms", verify=True)
    assert result.verify is not None and result.verify.passed
    assert all(m.cosine >= 0.9999 for m in result.verify.outputs)
    assert [v.name for v in result.graph.inputs] == ["input"]


def test_cond_and_while_lower_to_if_and_loop(tf: Any, tmp_path: Any) -> None:
    ops: dict[str, int] = {}
    for case in ("cond", "while"):
        fn, spec = CASES[case]
        pb = freeze_function(lambda x, fn=fn: fn(tf, x), [spec], tmp_path / f"{case}.pb")
        ops.update(parse_tf(pb).count_ops())
    assert ops.get("If") == 1 and ops.get("Loop") == 1


def test_dynamic_batch_pinned_by_input_shapes(tf: Any, tmp_path: Any) -> None:
    pb = freeze_function(lambda x: tf.nn.softmax(x * 2.0), [((None, 3), F32)], tmp_path / "d.pb")
    assert parse_tf(pb).inputs[0].shape == ("input_d0", 3)
    graph = parse_tf(pb, input_shapes={"input": [4, 3]})
    assert graph.inputs[0].shape == (4, 3)
    assert graph.outputs[0].shape == (4, 3)


def test_unsupported_ops_reported_together(tf: Any, tmp_path: Any) -> None:
    def fn(x: Any) -> Any:
        return [tf.math.bessel_i0e(x) + tf.math.lgamma(x), tf.pad(x, [[1, 1]], mode="SYMMETRIC")]

    pb = freeze_function(fn, [((4,), F32)], tmp_path / "u.pb")
    with pytest.raises(UnsupportedModelError) as info:
        parse_tf(pb)
    assert set(info.value.ops) == {"BesselI0e", "Lgamma"}
    assert any("SYMMETRIC" in p for p in info.value.problems)


def test_supported_ops_cover_the_brief() -> None:
    wanted = {
        "Conv2D", "DepthwiseConv2dNative", "Conv2DBackpropInput", "BiasAdd", "FusedBatchNormV3",
        "MatMul", "BatchMatMulV2", "Relu", "Relu6", "Elu", "Selu", "LeakyRelu", "Sigmoid",
        "Tanh", "Softmax", "LogSoftmax", "Add", "AddV2", "Sub", "Mul", "RealDiv", "Maximum",
        "Minimum", "SquaredDifference", "Rsqrt", "Sqrt", "Square", "Exp", "Log", "Pow", "Neg",
        "Abs", "Mean", "Sum", "Max", "Min", "Prod", "MaxPool", "AvgPool", "Reshape", "Squeeze",
        "ExpandDims", "Transpose", "ConcatV2", "Pack", "Unpack", "Split", "SplitV",
        "StridedSlice", "Slice", "GatherV2", "Pad", "PadV2", "MirrorPad", "ResizeBilinear",
        "ResizeNearestNeighbor", "Shape", "Fill", "Cast", "Tile", "Range", "Einsum", "Erf",
        "ArgMax", "Select", "SelectV2", "Less", "Greater", "Equal", "Identity", "IdentityN",
        "StopGradient", "While", "StatelessWhile", "If", "StatelessIf",
    }  # fmt: skip
    assert wanted <= set(supported_ops())
