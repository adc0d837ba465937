"""Full int8 quantization keeps a trained CNN's accuracy (scikit-learn's bundled digits).

A small CNN (conv 3x3 -> Relu -> conv 3x3 stride 2 -> Relu -> Gemm) is trained here
with a few lines of NumPy (im2col, Adam), exported with onnx.helper, converted with
``quant_type=FULL_QUANT`` (100 training images as .npy calibration files) and run as
``.ms`` by the executor on the 450 held-out digits.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import converter
from converter.pipeline import convert

datasets = pytest.importorskip("sklearn.datasets")

K = 3


def _im2col(x: np.ndarray, stride: int) -> np.ndarray:
    """[N, C, H, W] -> [N, C*9, OH*OW] (pad 1), C-major then taps like OIHW weights."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    oh, ow = (h - 1) // stride + 1, (w - 1) // stride + 1
    taps = [xp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
            for i in range(K) for j in range(K)]
    return np.stack(taps, axis=2).reshape(n, c * K * K, oh * ow)


def _col2im(cols: np.ndarray, shape: tuple[int, ...], stride: int) -> np.ndarray:
    n, c, h, w = shape
    oh, ow = (h - 1) // stride + 1, (w - 1) // stride + 1
    cols = cols.reshape(n, c, K * K, oh, ow)
    xp = np.zeros((n, c, h + 2, w + 2), cols.dtype)
    for t in range(K * K):
        i, j = divmod(t, K)
        xp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride] += cols[:, :, t]
    return xp[:, :, 1:-1, 1:-1]


def _forward(p: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, list]:
    c1 = _im2col(x, 1)
    a1 = np.maximum(np.einsum("ok,nkp->nop", p["w1"].reshape(8, -1), c1) + p["b1"][:, None], 0)
    h1 = a1.reshape(-1, 8, 8, 8)
    c2 = _im2col(h1, 2)
    a2 = np.maximum(np.einsum("ok,nkp->nop", p["w2"].reshape(16, -1), c2) + p["b2"][:, None], 0)
    flat = a2.reshape(len(x), -1)
    return flat @ p["w3"].T + p["b3"], [c1, a1, h1, c2, a2, flat]


def _train(x: np.ndarray, y: np.ndarray, epochs: int = 12) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    p = {
        "w1": rng.standard_normal((8, 1, K, K)) * 0.5, "b1": np.zeros(8),
        "w2": rng.standard_normal((16, 8, K, K)) * 0.15, "b2": np.zeros(16),
        "w3": rng.standard_normal((10, 256)) * 0.06, "b3": np.zeros(10),
    }  # fmt: skip
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v2 = {k: np.zeros_like(v) for k, v in p.items()}
    step = 0
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), 32):
            idx = order[start:start + 32]
            xb, yb = x[idx], y[idx]
            logits, (c1, a1, h1, c2, a2, flat) = _forward(p, xb)
            prob = np.exp(logits - logits.max(1, keepdims=True))
            prob /= prob.sum(1, keepdims=True)
            prob[np.arange(len(yb)), yb] -= 1
            d = prob / len(yb)
            g = {"w3": d.T @ flat, "b3": d.sum(0)}
            da2 = (d @ p["w3"]).reshape(a2.shape) * (a2 > 0)
            g["w2"] = np.einsum("nop,nkp->ok", da2, c2).reshape(p["w2"].shape)
            g["b2"] = da2.sum((0, 2))
            dc2 = np.einsum("ok,nop->nkp", p["w2"].reshape(16, -1), da2)
            da1 = _col2im(dc2, h1.shape, 2).reshape(a1.shape) * (a1 > 0)
            g["w1"] = np.einsum("nop,nkp->ok", da1, c1).reshape(p["w1"].shape)
            g["b1"] = da1.sum((0, 2))
            step += 1
            for k in p:  # Adam
                m[k] = 0.9 * m[k] + 0.1 * g[k]
                v2[k] = 0.999 * v2[k] + 0.001 * g[k] ** 2
                mh, vh = m[k] / (1 - 0.9**step), v2[k] / (1 - 0.999**step)
                p[k] = p[k] - 0.005 * mh / (np.sqrt(vh) + 1e-8)
    return {k: v.astype(np.float32) for k, v in p.items()}


def _export(p: dict[str, np.ndarray], path: Path) -> None:
    inits = [numpy_helper.from_array(v, k) for k, v in p.items()]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1] * 4, name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1] * 4, strides=[2, 2],
                         name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Flatten", ["r2"], ["f"], axis=1, name="flatten"),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["logits"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes, "digits_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("digits")
    data = datasets.load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None]
    y = data.target
    rng = np.random.default_rng(1)
    order = rng.permutation(len(x))
    train, test = order[:-450], order[-450:]
    params = _train(x[train].astype(np.float64), y[train])
    model = root / "digits.onnx"
    _export(params, model)
    calib = root / "calib"
    calib.mkdir()
    for i, k in enumerate(train[:100]):
        np.save(calib / f"{i:03d}.npy", x[k:k + 1])
    return {"root": root, "model": model, "calib": calib, "x": x[test], "y": y[test]}


def _accuracy(ms: Path, x: np.ndarray, y: np.ndarray) -> float:
    logits = converter.load(ms).run({"input": x})["logits"]
    return float((logits.argmax(1) == y).mean() * 100)


def _quantized(digits: dict, name: str, **full: str) -> tuple[float, dict]:
    root = digits["root"]
    lines = ["[common_quant_param]", "quant_type=FULL_QUANT", "[full_quant_param]"]
    lines += [f"{k}={v}" for k, v in full.items()]
    lines += ["[data_preprocess_param]", f"calibrate_path=input:{digits['calib']}",
              "calibrate_size=100"]
    cfg = root / f"{name}.ini"
    cfg.write_text("\n".join(lines) + "\n")
    report = root / f"{name}.json"
    convert(digits["model"], fmk="ONNX", output=root / f"{name}.ms", config_file=cfg,
            report=report)
    summary = json.loads(report.read_text())["conversion"]["compression"]["full_quant"]
    return _accuracy(root / f"{name}.ms", digits["x"], digits["y"]), summary


def test_int8_keeps_top1_within_half_a_point(digits):
    convert(digits["model"], fmk="ONNX", output=digits["root"] / "float.ms")
    float_acc = _accuracy(digits["root"] / "float.ms", digits["x"], digits["y"])
    assert float_acc >= 95.0  # the training above works
    int8_acc, summary = _quantized(digits, "int8", activation_quant_method="MAX_MIN")
    assert summary["ops"].get("QLinearConv") == 2 and summary["ops"].get("QGemm") == 1
    assert "Conv" not in summary["ops"] and "Relu" not in summary["ops"]
    assert int8_acc >= float_acc - 0.5, (float_acc, int8_acc)
    bc_acc, bc = _quantized(digits, "int8_bc", activation_quant_method="MAX_MIN",
                            bias_correction="true")
    assert bc["bias_correction"]["layers"] == 3
    assert bc_acc >= int8_acc, (int8_acc, bc_acc)
    print(f"digits top-1: float {float_acc:.2f}, int8 {int8_acc:.2f}, "
          f"int8 + bias correction {bc_acc:.2f}")


@pytest.mark.parametrize("method", ["KL", "PERCENTILE", "MSE"])
def test_histogram_methods_keep_accuracy(digits, method):
    acc, summary = _quantized(digits, f"int8_{method}", activation_quant_method=method)
    assert summary["method"] == method
    convert(digits["model"], fmk="ONNX", output=digits["root"] / "float.ms")
    float_acc = _accuracy(digits["root"] / "float.ms", digits["x"], digits["y"])
    assert acc >= float_acc - 1.5, (method, float_acc, acc)
