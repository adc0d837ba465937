"""Full int8 quantization: planning, integer rewriting, bias correction, .ms round trip."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from converter.errors import UsageError
from converter.executor.runtime import Runtime
from converter.ms import read_ms, write_ms
from ir import DataType, Graph, Node, Value
from passes.quant import full as F
from passes.quant.calibrate import collect_statistics

F32 = DataType.FLOAT
RNG = np.random.default_rng(0)


def _const(name: str, shape: tuple[int, ...], scale: float = 0.3) -> Value:
    return Value(name, const=(RNG.standard_normal(shape) * scale).astype(np.float32))


def _add(g: Graph, op: str, inputs: list, name: str, **attrs: Any) -> Value:
    out = g.append(Node(op, inputs, 1, attrs, name=name)).outputs[0]
    out.dtype = F32
    return out


def _cnn() -> Graph:
    """Conv+Relu -> MaxPool -> Conv, Add (residual) -> Relu -> GAP -> Flatten -> Gemm."""
    g = Graph()
    x = Value("x", F32, ("N", 3, 8, 8))
    g.inputs = [x]
    a = _add(g, "ConvAct", [x, _const("w1", (8, 3, 3, 3)), _const("b1", (8,))], "conv1",
             pads=[1] * 4, activation="Relu")
    p = _add(g, "MaxPool", [a], "pool", kernel_shape=[2, 2], strides=[2, 2])
    c = _add(g, "Conv", [p, _const("w2", (8, 8, 3, 3)), _const("b2", (8,))], "conv2",
             pads=[1] * 4)
    r = _add(g, "Relu", [_add(g, "Add", [c, p], "add")], "relu")
    f = _add(g, "Flatten", [_add(g, "GlobalAveragePool", [r], "gap")], "flatten")
    y = _add(g, "Gemm", [f, _const("w3", (5, 8)), _const("b3", (5,))], "fc", transB=1)
    y.name = "y"
    g.outputs = [y]
    return g


def _samples(n: int = 8, shape: tuple[int, ...] = (2, 3, 8, 8)) -> list[dict[str, np.ndarray]]:
    return [{"x": RNG.standard_normal(shape).astype(np.float32)} for _ in range(n)]


def _quantize(g: Graph, samples: list, **full: Any) -> F.Rewriter:
    opts = F.Options(**full)
    F.unfuse_activations(g, opts.skip)
    kinds = F.plan(g, opts.skip)
    axes = F.channel_axes(g, kinds) if opts.bias_correction else {}
    stats = collect_statistics(g, samples, opts.method != "MAX_MIN", axes)
    rw = F.Rewriter(g, kinds, stats, opts)
    rw.run()
    if opts.bias_correction:
        F.correct_biases(g, rw.layers, stats)
    return rw


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def _compare(build, samples, **full: Any) -> tuple[Graph, float]:
    g = build()
    test = _samples(2, samples[0]["x"].shape)
    ref = [Runtime(g).run(t) for t in test]
    _quantize(g, samples, **full)
    rt = Runtime(g)
    cos = min(_cosine(r[k], rt.run(t)[k]) for r, t in zip(ref, test, strict=True) for k in r)
    return g, cos


def test_cnn_becomes_integer_ops():
    g, cos = _compare(_cnn, _samples())
    ops = g.count_ops()
    assert ops == {"QuantizeLinear": 1, "QLinearConv": 2, "MaxPool": 1, "QLinearAdd": 1,
                   "QLinearGlobalAveragePool": 1, "Flatten": 1, "QGemm": 1}, ops
    assert cos > 0.999
    (out,) = g.outputs
    assert out.name == "y" and out.producer.op == "QGemm"  # float output, no requantization
    pool = next(n for n in g.nodes if n.op == "MaxPool")
    assert pool.inputs[0].dtype == DataType.INT8 and pool.outputs[0].quant is not None
    conv = next(n for n in g.nodes if n.op == "QLinearConv")
    assert conv.inputs[3].const.dtype == np.int8 and conv.inputs[8].const.dtype == np.int32
    assert conv.inputs[3].quant.axis == 0 and conv.inputs[4].const.shape == (8,)


@pytest.mark.parametrize("method", ["MAX_MIN", "KL", "PERCENTILE", "MSE", "REMOVAL_OUTLIER"])
@pytest.mark.parametrize("symmetric", [False, True])
def test_methods_and_symmetry_keep_the_output(method, symmetric):
    g, cos = _compare(_cnn, _samples(), method=method, symmetric=symmetric)
    assert cos > 0.995, (method, symmetric, cos)
    if symmetric:  # zero point 0: the Relus are int8 Clips (exact), not clamps
        assert "Clip" in g.count_ops()
        assert all(int(n.inputs[2].const) == 0 for n in g.nodes if n.op == "QLinearConv")


def test_per_tensor_weights():
    g, cos = _compare(_cnn, _samples(), per_channel=False)
    conv = next(n for n in g.nodes if n.op == "QLinearConv")
    assert len(set(conv.inputs[4].const.tolist())) == 1 and cos > 0.995


def test_skip_quant_node_stays_float():
    g, cos = _compare(_cnn, _samples(), skip=frozenset({"conv2"}))
    ops = g.count_ops()
    assert ops["Conv"] == 1 and ops["QLinearConv"] == 1 and ops["DequantizeLinear"] >= 1
    assert cos > 0.999


def _transformer_block() -> Graph:
    """MatMulAct(Gelu) on [B, S, H], q @ k^T of two activations, Softmax, @ v."""
    g = Graph()
    x = Value("x", F32, ("B", 4, 8))
    g.inputs = [x]
    h = _add(g, "MatMulAct", [x, _const("w", (8, 8)), _const("b", (8,))], "fc",
             activation="Gelu", activation_params=[0.0])
    k = _add(g, "MatMulAct", [x, _const("wk", (8, 8)), None], "k", activation="Relu")
    kt = _add(g, "Transpose", [k], "kt", perm=[0, 2, 1])
    s = _add(g, "MatMul", [h, kt], "scores")
    p = _add(g, "Softmax", [s], "softmax", axis=-1)
    y = _add(g, "MatMul", [p, x], "context")
    g.outputs = [y]
    return g


def test_matmuls_and_unfused_activations():
    g, cos = _compare(_transformer_block, _samples(8, (2, 4, 8)))
    ops = g.count_ops()
    assert ops["Gelu"] == 1 and ops["Softmax"] == 1  # float between integer matmuls
    assert ops["MatMulIntegerToFloat"] == 4  # 3-D activations: float outputs
    assert "MatMul" not in ops and "MatMulAct" not in ops
    assert cos > 0.99


def test_two_activation_matmul_with_int8_reader_is_qlinear_matmul():
    g = Graph()
    a, b = Value("a", F32, (4, 6)), Value("b", F32, (6, 3))
    g.inputs = [a, b]
    m = _add(g, "MatMul", [a, b], "mm")
    g.outputs = [_add(g, "Gemm", [m, _const("w", (3, 2)), None], "fc")]
    samples = [{"a": RNG.standard_normal((4, 6)).astype(np.float32),
                "b": RNG.standard_normal((6, 3)).astype(np.float32)} for _ in range(4)]
    ref = Runtime(g).run(samples[0])
    _quantize(g, samples)
    assert g.count_ops()["QLinearMatMul"] == 1 and g.count_ops()["QGemm"] == 1
    (y,) = Runtime(g).run(samples[0]).values()
    assert _cosine(next(iter(ref.values())), y) > 0.999


def test_leaky_relu_and_sigmoid_use_lookup_ops():
    def build() -> Graph:
        g = Graph()
        x = Value("x", F32, ("N", 3, 8, 8))
        g.inputs = [x]
        a = _add(g, "ConvAct", [x, _const("w1", (4, 3, 1, 1)), None], "c1",
                 activation="LeakyRelu", activation_params=[0.1])
        b = _add(g, "Sigmoid", [a], "sig")
        c = _add(g, "Conv", [b, _const("w2", (4, 4, 1, 1)), None], "c2")
        g.outputs = [c]
        return g

    g, cos = _compare(build, _samples())
    ops = g.count_ops()
    assert ops["QLinearLeakyRelu"] == 1 and ops["QLinearSigmoid"] == 1 and cos > 0.999


def test_bias_correction_removes_the_mean_shift_of_per_tensor_weights():
    def build() -> Graph:
        g = Graph()
        x = Value("x", F32, (1, 8, 6, 6))
        g.inputs = [x]
        w = _const("w", (8, 2, 3, 3))
        w.const[0] *= 20  # one large channel: coarse per-tensor scale for the others
        g.outputs = [_add(g, "Conv", [x, w, None], "conv", pads=[1] * 4, group=4)]
        return g

    samples = [{"x": (RNG.standard_normal((1, 8, 6, 6)) + 2).astype(np.float32)}
               for _ in range(20)]
    shifts = []
    for bc in (False, True):
        g = build()
        ref = [Runtime(g).run(s) for s in samples]
        _quantize(g, samples, per_channel=False, bias_correction=bc)
        rt = Runtime(g)
        diff = [r[k] - rt.run(s)[k] for r, s in zip(ref, samples, strict=True) for k in r]
        shifts.append(float(np.abs(np.mean(diff, axis=(0, 1, 3, 4))).mean()))
    assert shifts[1] < 0.3 * shifts[0], shifts


def test_quantized_graph_round_trips_through_ms(tmp_path):
    g = _cnn()
    samples = _samples()
    _quantize(g, samples)
    before = Runtime(g).run(samples[0])
    write_ms(g, tmp_path / "q.ms")
    back = read_ms(tmp_path / "q.ms")
    after = Runtime(back).run(samples[0])
    np.testing.assert_array_equal(before["y"], after["y"])
    weights = [v for v in back.values() if v.is_const and v.const.dtype == np.int8
               and v.const.ndim == 4]
    assert len(weights) == 2 and all(v.quant is not None for v in weights)


def test_quantize_full_entry_point_and_errors(tmp_path):
    g = _cnn()
    for i, s in enumerate(_samples(4)):
        np.save(tmp_path / f"{i}.npy", s["x"])
    data = {"calibrate_path": f"x:{tmp_path}", "calibrate_size": 3}
    lines: list[str] = []
    report = F.quantize_full(g, lines.append, {"bit_num": 8}, {"bias_correction": True}, data)
    assert report["samples"] == 3 and report["ops"]["QLinearConv"] == 2
    assert report["bias_correction"]["layers"] == 3 and lines
    with pytest.raises(UsageError, match="bit_num=8"):
        F.quantize_full(_cnn(), print, {"bit_num": 4}, {}, data)
    with pytest.raises(UsageError, match="calibrate_path"):
        F.quantize_full(_cnn(), print, {}, {}, {"calibrate_path": ""})


def test_fused_residual_add_relu_is_quantized_as_qlinear_add():
    """Test: AddAct(Relu) from the binary fusion is split so the residual Add runs in int8."""
    from ir import DataType, Graph, Node, Value
    from passes.quant.full import unfuse_activations

    g = Graph()
    a = Value("a", DataType.FLOAT, (1, 4))
    b = Value("b", DataType.FLOAT, (1, 4))
    g.inputs = [a, b]
    n = g.append(Node("AddAct", [a, b], attrs={"activation": "Relu"}, name="res"))
    m = g.append(Node("MulAct", [n.outputs[0], b], attrs={"activation": "Clip",
                                                          "activation_params": [0.0, 6.0]},
                      name="scale"))  # fmt: skip
    g.outputs = [m.outputs[0]]
    feeds = {"a": np.array([[-2, -1, 1, 2]], np.float32), "b": np.array([[1, 3, 2, 4]], np.float32)}
    from converter.executor.runtime import Runtime

    before = Runtime(g).run(feeds)
    assert unfuse_activations(g) == 2
    assert [x.op for x in g] == ["Add", "Relu", "Mul", "Clip"]
    after = Runtime(g).run(feeds)
    np.testing.assert_array_equal(before[m.outputs[0].name], after[m.outputs[0].name])
