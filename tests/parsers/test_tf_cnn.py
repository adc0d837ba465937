"""Keras CNNs through the TF front end, verified against TensorFlow: Keras' own
MobileNetV2 (alpha 0.35, 64x64) and a small ResNet with BN, a transposed conv and
bilinear upsampling, as SavedModel folders (the ResNet also as a frozen .pb)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("tensorflow")

import converter  # noqa: E402
from benchmarks import models_tf  # noqa: E402
from parsers.tf import parse_tf  # noqa: E402


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tf_cnn")
    resnet = models_tf.resnet()
    return {
        "mobilenet_v2": models_tf.save_saved_model(models_tf.mobilenet_v2(), root / "mnv2"),
        "resnet": models_tf.save_saved_model(resnet, root / "resnet"),
        "resnet_pb": models_tf.save_frozen_pb(resnet, root / "resnet.pb"),
    }


@pytest.mark.parametrize("case", ["mobilenet_v2", "resnet", "resnet_pb"])
def test_cnn_matches_tensorflow(saved: dict[str, Path], tmp_path: Path, case: str) -> None:
    result = converter.convert(saved[case], fmk="TF", output=tmp_path / "m.ms", verify=True)
    assert result.verify is not None and result.verify.passed
    assert all(m.cosine >= 0.9999 for m in result.verify.outputs)


def test_mobilenet_keeps_nhwc_and_onnx_weights(saved: dict[str, Path]) -> None:
    graph = parse_tf(saved["mobilenet_v2"])
    convs = [n for n in graph.all_nodes() if n.op == "Conv"]
    assert convs and all(n.attr("format") == "NHWC" for n in convs)
    depthwise = [n for n in convs if n.attr("group") > 1]
    assert len(depthwise) == 17
    for n in depthwise:  # [C*M, 1, kH, kW] with group = C
        w = n.inputs[1].const
        assert w is not None and w.shape[1] == 1 and w.shape[0] == n.attr("group")
    (inp,) = graph.inputs
    assert inp.shape == (f"{inp.name}_d0", 64, 64, 3)  # dynamic batch, symbolic


def test_resnet_ops(saved: dict[str, Path]) -> None:
    ops = parse_tf(saved["resnet"]).count_ops()
    assert ops["ConvTranspose"] == 1 and ops["Resize"] == 1 and ops["MaxPool"] == 1
    assert parse_tf(saved["resnet_pb"]).count_ops() == ops
