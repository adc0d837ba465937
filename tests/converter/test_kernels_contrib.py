"""com.microsoft kernels: one-node ONNX models through convert -> .ms -> executor, against
onnxruntime's contrib kernels. Integer outputs match exactly unless a test says otherwise;
float outputs to rtol 1e-4 / atol 1e-5 except where onnxruntime approximates (noted).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from onnx import helper
from test_kernels_quant import check, one_node_model, qrand, rand, run_both, run_liteconv

RNG = np.random.default_rng(1)
MS = "com.microsoft"


def ms(tmp_path: Path, op: str, feeds: dict, consts: dict, inputs: list[str], **kw: Any) -> list:
    return check(tmp_path, op, feeds, consts, inputs, domain=MS, **kw)


# --------------------------------------------------------------------------- activations


def test_gelu(tmp_path: Path) -> None:
    ms(tmp_path, "Gelu", {"x": rand(3, 8, scale=3)}, {}, ["x"])


@pytest.mark.parametrize("bias", [False, True])
def test_fast_gelu(tmp_path: Path, bias: bool) -> None:
    """onnxruntime evaluates tanh with an approximation: atol 1e-4."""
    consts = {"b": rand(8)} if bias else {}
    ms(tmp_path, "FastGelu", {"x": rand(3, 8, scale=3)}, consts, ["x", "b"] if bias else ["x"],
       atol=1e-4)


def test_bias_gelu(tmp_path: Path) -> None:
    ms(tmp_path, "BiasGelu", {"x": rand(2, 3, 8, scale=2)}, {"b": rand(8)}, ["x", "b"])


@pytest.mark.parametrize("alpha", [1.702, 0.5])
def test_quick_gelu(tmp_path: Path, alpha: float) -> None:
    ms(tmp_path, "QuickGelu", {"x": rand(4, 6, scale=3)}, {}, ["x"], alpha=alpha)


def test_bias_add(tmp_path: Path) -> None:
    """onnxruntime has no CPU kernel for BiasAdd: checked against NumPy."""
    feeds = {"x": rand(2, 5, 8), "skip": rand(2, 5, 8)}
    b = rand(8)
    model = one_node_model("BiasAdd", feeds, {"b": b}, ["x", "b", "skip"], domain=MS)
    (got,) = run_liteconv(model, feeds, tmp_path)
    np.testing.assert_allclose(got, feeds["x"] + b + feeds["skip"], rtol=1e-6)


@pytest.mark.parametrize("act", [{"activation": "Relu"}, {"activation": "Tanh"},
                                 {"activation": "LeakyRelu", "activation_alpha": 0.2}])
def test_fused_gemm(tmp_path: Path, act: dict) -> None:
    ms(tmp_path, "FusedGemm", {"a": rand(4, 6)}, {"b": rand(5, 6), "c": rand(5)},
       ["a", "b", "c"], transB=1, alpha=0.5, **act)


# --------------------------------------------------------------------------- matmul / conv


@pytest.mark.parametrize(
    "case",
    [
        ((3, 4), (4, 5), {}),
        ((2, 3, 4), (2, 5, 4), {"transB": 1, "alpha": 0.5}),
        ((2, 4, 3), (4, 5), {"transA": 1}),
        ((3, 2, 4), (2, 4, 5), {"transBatchA": 1}),
        ((3, 2, 4), (4, 2, 5), {"transBatchA": 1, "transBatchB": 1}),
        ((4, 2, 3), (5, 2, 4), {"transBatchA": 1, "transA": 1, "transBatchB": 1,
                                "transB": 1}),
    ],
)
def test_fused_matmul(tmp_path: Path, case: tuple) -> None:
    sa, sb, attrs = case
    ms(tmp_path, "FusedMatMul", {"a": rand(*sa), "b": rand(*sb)}, {}, ["a", "b"], **attrs)


@pytest.mark.parametrize(
    "act",
    [{"activation": "Relu"}, {"activation": "LeakyRelu", "activation_params": [0.1]},
     {"activation": "Clip", "activation_params": [-0.5, 0.5]}, {"activation": "Sigmoid"},
     {"activation": "HardSigmoid", "activation_params": [0.3, 0.4]}, {"activation": "Tanh"}],
)
@pytest.mark.parametrize("with_z", [False, True])
def test_fused_conv(tmp_path: Path, act: dict, with_z: bool) -> None:
    feeds = {"x": rand(1, 3, 6, 6)}
    names = ["x", "w", "b"]
    if with_z:
        feeds["z"] = rand(1, 4, 6, 6)
        names.append("z")
    ms(tmp_path, "FusedConv", feeds, {"w": rand(4, 3, 3, 3), "b": rand(4)}, names,
       kernel_shape=[3, 3], pads=[1, 1, 1, 1], **act)


# --------------------------------------------------------------------------- normalizations


@pytest.mark.parametrize("beta", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_skip_layer_norm(tmp_path: Path, beta: bool, bias: bool) -> None:
    feeds = {"x": rand(2, 5, 16), "skip": rand(2, 5, 16)}
    consts = {"g": rand(16), "be": rand(16), "bi": rand(16)}
    names = ["x", "skip", "g", "be" if beta else "", "bi" if bias else ""]
    model = one_node_model("SkipLayerNormalization", feeds, {k: consts[k] for k in names
                                                             if k in consts},
                           names, n_out=4, domain=MS, epsilon=1e-5)
    model.graph.node[0].output[1] = ""  # mean/inv_std_var: not computed by onnxruntime's CPU
    model.graph.node[0].output[2] = ""
    del model.graph.output[1:3]
    got, want = run_both(model, feeds, tmp_path)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bias", [False, True])
def test_skip_simplified_layer_norm(tmp_path: Path, bias: bool) -> None:
    feeds = {"x": rand(2, 5, 16), "skip": rand(2, 5, 16)}
    consts = {"g": rand(16), **({"bi": rand(16)} if bias else {})}
    names = ["x", "skip", "g", "bi" if bias else ""]
    model = one_node_model("SkipSimplifiedLayerNormalization", feeds, consts, names, n_out=4,
                           domain=MS, epsilon=1e-6)
    model.graph.node[0].output[1] = ""
    del model.graph.output[1]
    got, want = run_both(model, feeds, tmp_path)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("axis", [-1, 1])
def test_simplified_layer_norm_default_domain(tmp_path: Path, axis: int) -> None:
    """onnxruntime registers SimplifiedLayerNormalization in the default domain."""
    check(tmp_path, "SimplifiedLayerNormalization", {"x": rand(2, 3, 8)},
          {"s": rand(*((3, 8) if axis == 1 else (8,)))}, ["x", "s"], n_out=2, axis=axis,
          epsilon=1e-6, opset=17)


@pytest.mark.parametrize(
    "case", [((2, 3, 4, 5), (2, 1, 1, 5), 3, 0, (2, 1, 1, 5)),
             ((2, 3, 4, 5), (3, 4, 5), 1, 0, (3, 4, 5)),
             ((2, 3, 4, 5), (2, 4, 5), 2, 1, (2, 1, 4, 5))]
)
def test_bias_softmax(tmp_path: Path, case: tuple) -> None:
    """onnxruntime has BiasSoftmax only on GPU: checked against NumPy."""
    ds, bs, axis, inner, bshape = case
    feeds = {"x": rand(*ds), "b": rand(*bs)}
    model = one_node_model("BiasSoftmax", feeds, {}, ["x", "b"], domain=MS, axis=axis,
                           is_inner_broadcast=inner)
    (got,) = run_liteconv(model, feeds, tmp_path)
    v = feeds["x"] + feeds["b"].reshape(bshape)
    axes = tuple(range(axis, 4))
    e = np.exp(v - v.max(axis=axes, keepdims=True))
    np.testing.assert_allclose(got, e / e.sum(axis=axes, keepdims=True), rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- quantized matmuls


@pytest.mark.parametrize("btype", [np.int8, np.uint8])
@pytest.mark.parametrize("per_column", [False, True])
def test_dynamic_quantize_matmul(tmp_path: Path, btype: Any, per_column: bool) -> None:
    n = 6
    bs = (RNG.random(n if per_column else ()) * 0.02 + 0.01).astype(np.float32)
    bz = (RNG.integers(100, 150, n if per_column else ()) if btype == np.uint8
          else np.zeros(n if per_column else (), np.int64)).astype(btype)
    consts = {"b": qrand(btype, 16, n), "bs": bs, "bz": bz, "bias": rand(n)}
    ms(tmp_path, "DynamicQuantizeMatMul", {"a": rand(3, 16, scale=3)}, consts,
       ["a", "b", "bs", "bz", "bias"])


def test_matmul_integer_to_float(tmp_path: Path) -> None:
    consts = {"b": qrand(np.int8, 16, 6), "as": np.array(0.02, np.float32),
              "bs": (RNG.random(6) * 0.02 + 0.01).astype(np.float32),
              "az": np.array(128, np.uint8), "bias": rand(6)}
    ms(tmp_path, "MatMulIntegerToFloat", {"a": qrand(np.uint8, 2, 3, 16)}, consts,
       ["a", "b", "as", "bs", "az", "", "bias"])


@pytest.mark.parametrize("quantized_out", [False, True])
@pytest.mark.parametrize("trans_b", [0, 1])
def test_qgemm(tmp_path: Path, quantized_out: bool, trans_b: int) -> None:
    bshape = (6, 16) if trans_b else (16, 6)
    consts = {"as": np.array(0.02, np.float32), "az": np.array(120, np.uint8),
              "b": qrand(np.int8, *bshape), "bs": np.array(0.01, np.float32),
              "bz": np.array(0, np.int8), "c": RNG.integers(-500, 500, 6).astype(np.int32)}
    names = ["a", "as", "az", "b", "bs", "bz", "c"]
    if quantized_out:
        consts |= {"ys": np.array(0.05, np.float32), "yz": np.array(100, np.uint8)}
        names += ["ys", "yz"]
    ms(tmp_path, "QGemm", {"a": qrand(np.uint8, 5, 16)}, consts, names, transB=trans_b,
       alpha=0.75)


# --------------------------------------------------------------------------- qlinear elementwise


def _qparams(prefix: str, qtype: Any, scale: float, zp: int) -> dict[str, np.ndarray]:
    return {f"{prefix}s": np.array(scale, np.float32), f"{prefix}z": np.array(zp, qtype)}


@pytest.mark.parametrize("op", ["QLinearAdd", "QLinearMul"])
@pytest.mark.parametrize("qtype", [np.uint8, np.int8])
@pytest.mark.parametrize("bshape", [(2, 3, 8), (8,), (3, 1)])
def test_qlinear_binary(tmp_path: Path, op: str, qtype: Any, bshape: tuple) -> None:
    zp = 5 if qtype == np.int8 else 128
    consts = {**_qparams("a", qtype, 0.03, zp), **_qparams("b", qtype, 0.05, zp - 3),
              **_qparams("c", qtype, 0.07 if op == "QLinearAdd" else 0.02, zp + 1)}
    feeds = {"a": qrand(qtype, 2, 3, 8), "b": qrand(qtype, *bshape)}
    ms(tmp_path, op, feeds, consts, ["a", "as", "az", "b", "bs", "bz", "cs", "cz"])


@pytest.mark.parametrize("qtype", [np.uint8, np.int8])
def test_qlinear_sigmoid_and_leaky_relu(tmp_path: Path, qtype: Any) -> None:
    zp = 0 if qtype == np.int8 else 128
    consts = {**_qparams("x", qtype, 0.05, zp), **_qparams("y", qtype, 1 / 256, 0 if
                                                          qtype == np.uint8 else -128)}
    names = ["x", "xs", "xz", "ys", "yz"]
    ms(tmp_path, "QLinearSigmoid", {"x": qrand(qtype, 4, 64)}, consts, names)
    consts = {**_qparams("x", qtype, 0.05, zp), **_qparams("y", qtype, 0.04, zp // 2)}
    ms(tmp_path, "QLinearLeakyRelu", {"x": qrand(qtype, 4, 64)}, consts, names, alpha=0.1)


@pytest.mark.parametrize("channels_last", [0, 1])
@pytest.mark.parametrize("qtype", [np.uint8, np.int8])
def test_qlinear_global_average_pool(tmp_path: Path, channels_last: int, qtype: Any) -> None:
    consts = {**_qparams("x", qtype, 0.05, 3), **_qparams("y", qtype, 0.03, -2 if qtype ==
                                                          np.int8 else 7)}
    ms(tmp_path, "QLinearGlobalAveragePool", {"x": qrand(qtype, 2, 5, 6, 7)}, consts,
       ["x", "xs", "xz", "ys", "yz"], channels_last=channels_last)


def test_qlinear_concat(tmp_path: Path) -> None:
    feeds = {"a": qrand(np.uint8, 2, 3, 4), "b": qrand(np.uint8, 2, 5, 4)}
    consts = {**_qparams("y", np.uint8, 0.05, 120), **_qparams("a", np.uint8, 0.03, 100),
              **_qparams("b", np.uint8, 0.05, 120)}  # b already has y's parameters
    ms(tmp_path, "QLinearConcat", feeds, consts, ["ys", "yz", "a", "as", "az", "b", "bs", "bz"],
       axis=1)


def test_qlinear_conv_channels_last(tmp_path: Path) -> None:
    """com.microsoft QLinearConv with channels_last=1 lowers to QLinearConv format=NHWC."""
    consts = {"xs": np.array(0.05, np.float32), "xz": np.array(128, np.uint8),
              "w": qrand(np.int8, 4, 3, 3, 3), "ws": np.array(0.01, np.float32),
              "wz": np.array(0, np.int8), "ys": np.array(0.2, np.float32),
              "yz": np.array(7, np.uint8)}
    names = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"]
    ms(tmp_path, "QLinearConv", {"x": qrand(np.uint8, 1, 6, 6, 3)}, consts, names,
       channels_last=1, kernel_shape=[3, 3], pads=[1, 1, 1, 1])


def test_ms_quantize_dequantize(tmp_path: Path) -> None:
    consts = {"s": np.array(0.1, np.float32), "z": np.array(10, np.uint8)}
    ms(tmp_path, "QuantizeLinear", {"x": rand(3, 4, scale=5)}, consts, ["x", "s", "z"])
    ms(tmp_path, "DequantizeLinear", {"q": qrand(np.uint8, 3, 4)}, consts, ["q", "s", "z"])


# --------------------------------------------------------------------------- LSTM


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_dynamic_quantize_lstm(tmp_path: Path, direction: str, per_channel: bool) -> None:
    """onnxruntime also quantizes X and h dynamically at every step; we dequantize the
    weights and run the float LSTM: agreement within quantization noise (atol 2e-2)."""
    dirs, hidden, inp = (2 if direction == "bidirectional" else 1), 4, 5
    sshape = (dirs, 4 * hidden) if per_channel else (dirs,)
    consts = {
        "w": qrand(np.int8, dirs, inp, 4 * hidden), "r": qrand(np.int8, dirs, hidden,
                                                               4 * hidden),
        "b": rand(dirs, 8 * hidden, scale=0.1),
        "ws": (RNG.random(sshape) * 0.004 + 0.002).astype(np.float32),
        "wz": np.zeros(sshape, np.int8),
        "rs": (RNG.random(sshape) * 0.004 + 0.002).astype(np.float32),
        "rz": np.zeros(sshape, np.int8),
    }
    names = ["x", "w", "r", "b", "", "", "", "", "ws", "wz", "rs", "rz"]
    ms(tmp_path, "DynamicQuantizeLSTM", {"x": rand(6, 2, inp)}, consts, names, n_out=3,
       hidden_size=hidden, direction=direction, rtol=0, atol=2e-2)


# --------------------------------------------------------------------------- attention


@pytest.mark.parametrize(
    "case",
    [
        ({}, None),
        ({"unidirectional": 1}, None),
        ({}, np.array([4, 2], np.int32)),
        ({}, np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.int32)),
        ({"scale": 0.3, "qkv_hidden_sizes": [8, 8, 12]}, None),
    ],
)
def test_attention(tmp_path: Path, case: tuple) -> None:
    attrs, mask = case
    sizes = attrs.get("qkv_hidden_sizes", [8, 8, 8])
    consts = {"w": rand(6, sum(sizes), scale=0.5), "b": rand(sum(sizes), scale=0.1)}
    names = ["x", "w", "b"]
    if mask is not None:
        consts["m"] = mask
        names.append("m")
    ms(tmp_path, "Attention", {"x": rand(2, 5, 6)}, consts, names, num_heads=2, **attrs)


@pytest.mark.parametrize("with_mask", [False, True])
def test_multi_head_attention(tmp_path: Path, with_mask: bool) -> None:
    feeds = {"q": rand(2, 3, 8), "k": rand(2, 5, 8), "v": rand(2, 5, 8)}
    consts = {"b": rand(24, scale=0.1)}
    names = ["q", "k", "v", "b"]
    if with_mask:
        consts["m"] = np.array([5, 3], np.int32)
        names.append("m")
    ms(tmp_path, "MultiHeadAttention", feeds, consts, names, num_heads=2)


# --------------------------------------------------------------------------- MatMulNBits


@pytest.mark.parametrize(
    "bits, zero_points",
    [(4, "none"), (4, "packed"), (4, "float"), (8, "none"), (8, "packed"), (2, "packed")],
)  # onnxruntime's CPU kernel has no 8-bit weights with float zero points
def test_matmul_nbits(tmp_path: Path, bits: int, zero_points: str) -> None:
    k, n, block = 40, 6, 16
    blocks = -(-k // block)
    blob = block * bits // 8
    consts: dict[str, np.ndarray] = {
        "b": RNG.integers(0, 256, (n, blocks, blob)).astype(np.uint8),
        "s": (RNG.random((n, blocks)) * 0.1).astype(np.float32),
        "bias": rand(n),
    }
    names = ["a", "b", "s", "", "", "bias"]
    if zero_points == "packed":
        consts["z"] = RNG.integers(0, 256, (n, -(-blocks * bits // 8))).astype(np.uint8)
        names[3] = "z"
    elif zero_points == "float":
        consts["z"] = (RNG.random((n, blocks)) * 2 ** bits).astype(np.float32)
        names[3] = "z"
    ms(tmp_path, "MatMulNBits", {"a": rand(3, k)}, consts, names, K=k, N=n, bits=bits,
       block_size=block, rtol=1e-4, atol=1e-4)


def test_unknown_contrib_op_is_reported(tmp_path: Path) -> None:
    model = one_node_model("QLinearSoftmax", {"x": qrand(np.uint8, 2, 3)}, {}, ["x"],
                           domain=MS, opset=13)
    model.graph.node[0].attribute.append(helper.make_attribute("opset", 13))
    from parsers.errors import UnsupportedModelError

    with pytest.raises(UnsupportedModelError, match="QLinearSoftmax"):
        run_both(model, {"x": qrand(np.uint8, 2, 3)}, tmp_path)


def test_skip_layer_norm_float16(tmp_path: Path) -> None:
    feeds = {"x": rand(2, 3, 16).astype(np.float16), "skip": rand(2, 3, 16).astype(np.float16)}
    consts = {"g": rand(16).astype(np.float16), "be": rand(16).astype(np.float16)}
    ms(tmp_path, "SkipLayerNormalization", feeds, consts, ["x", "skip", "g", "be"],
       rtol=2e-3, atol=2e-3)
