"""TFLite front end on CNNs built with Keras: MobileNetV2, a ResNet, an EfficientNet-lite
stack, each as float32, float16-weight and full-int8 models, verified against LiteRT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from converter.pipeline import convert
from ir import DataType
from parsers.tflite import parse_tflite
from tests.parsers.tflite_util import build_cached, check_int8

pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

ARCHS = {
    "mobilenet_v2": {"size": 64, "alpha": 0.35},
    "resnet": {},
    "efficientnet_lite": {},
}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    root = tmp_path_factory.mktemp("tflite_cnn")
    return {
        (name, form): build_cached(root, name, form, **kw)
        for name, kw in ARCHS.items()
        for form in ("float32", "float16", "int8")
    }


@pytest.mark.parametrize("form", ["float32", "float16"])
@pytest.mark.parametrize("name", list(ARCHS))
def test_float_models_verify(models, tmp_path: Path, name: str, form: str):
    result = convert(models[name, form], fmk="TFLITE", output=tmp_path / "m.ms", verify=True)
    assert result.verify is not None and result.verify.passed
    assert all(m.cosine >= 0.9999 for m in result.verify.outputs)


@pytest.mark.parametrize("name", list(ARCHS))
def test_int8_models_within_one_step(models, tmp_path: Path, name: str):
    assert check_int8(models[name, "int8"], tmp_path / "m.ms") <= 1


@pytest.mark.parametrize("name", list(ARCHS))
def test_int8_verify_passes(models, tmp_path: Path, name: str):
    result = convert(models[name, "int8"], fmk="TFLITE", output=tmp_path / "m.ms", verify=True)
    assert result.verify is not None and result.verify.passed


def test_int8_graph_keeps_int8_io_and_quant_params(models):
    g = parse_tflite(models["mobilenet_v2", "int8"])
    assert [v.dtype for v in g.inputs] == [DataType.INT8]
    assert [v.dtype for v in g.outputs] == [DataType.INT8]
    assert g.inputs[0].quant is not None and g.outputs[0].quant is not None
    ops = g.count_ops()
    assert ops["QuantizeLinear"] >= ops["Conv"] and ops["DequantizeLinear"] > ops["Conv"]
    conv = next(n for n in g.nodes if n.op == "Conv")
    w = conv.inputs[1].producer
    assert w is not None and w.op == "DequantizeLinear"
    q = w.inputs[0]
    assert q.const is not None and q.const.dtype == np.int8 and q.quant is not None
    assert q.quant.axis == 0 and q.quant.scale.size == q.const.shape[0]  # per channel, OIHW


def test_float16_weights_are_folded_to_float32(models):
    g = parse_tflite(models["resnet", "float16"])
    assert "DequantizeLinear" not in g.count_ops()
    conv = next(n for n in g.nodes if n.op == "Conv")
    assert conv.inputs[1].const is not None and conv.inputs[1].const.dtype == np.float32


def test_nhwc_conv_layout(models):
    g = parse_tflite(models["mobilenet_v2", "float32"])
    convs = [n for n in g.nodes if n.op == "Conv"]
    assert all(n.attr("format") == "NHWC" for n in convs)
    depthwise = [n for n in convs if n.attr("group") > 1]
    assert depthwise
    for n in depthwise:
        w = n.inputs[1].const
        assert w.shape[1] == 1 and n.attr("group") == n.inputs[0].shape[-1]
    assert g.inputs[0].shape == ("batch", 64, 64, 3)


def test_dynamic_batch_with_input_shape(models, tmp_path: Path):
    src = models["mobilenet_v2", "float32"]
    name = parse_tflite(src).inputs[0].name
    result = convert(src, fmk="TFLITE", output=tmp_path / "m.ms", verify=True,
                     input_shapes={name: [2, 64, 64, 3]})  # fmt: skip
    assert result.verify is not None and result.verify.passed
    assert result.verify.outputs[0].shape == [2, 10]
