"""Caffe front end on whole nets: convert + verify against the independent reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.models_caffe import NETS, write_net
from converter.pipeline import convert
from converter.reference import caffe as ref
from parsers.caffe import parse_caffe
from parsers.caffe.proto import read_prototxt

CAFFE2ONNX_NETS = ("alexnet", "vgg", "mobilenet_ssd")


@pytest.fixture(scope="module")
def nets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("caffe_nets")
    return {name: write_net(name, folder, seed=3) for name in NETS}


@pytest.mark.parametrize("name", list(NETS))
def test_net_converts_and_verifies(name: str, nets, tmp_path: Path):
    proto, model = nets[name]
    result = convert(proto, fmk="CAFFE", weight_file=model, output=tmp_path / name, verify=True)
    report = result.verify
    assert report is not None and report.passed
    assert [m.name for m in report.outputs] == ref.net_outputs(read_prototxt(proto))
    for m in report.outputs:
        assert m.cosine >= 0.9999 and m.max_abs < 1e-3, (m.name, m.cosine, m.max_abs)


@pytest.mark.parametrize("name", CAFFE2ONNX_NETS)
def test_caffe2onnx_and_numpy_references_agree(name: str, nets):
    proto, model = nets[name]
    assert ref.caffe2onnx_supports(read_prototxt(proto))
    shapes = ref.NumpyNet(read_prototxt(proto), {}).input_shapes()
    rng = np.random.default_rng(1)
    feeds = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    a = ref.run(proto, feeds, weight_file=model, engine="numpy")
    b = ref.run(proto, feeds, weight_file=model, engine="caffe2onnx")
    assert a.keys() == b.keys()
    for k in a:
        # caffe2onnx divides BatchNorm variances by (factor + 1e-5): ~1e-5 drift
        np.testing.assert_allclose(a[k], b[k], rtol=1e-3, atol=1e-4)


def test_reference_engine_choice(nets):
    chosen = {n: ref.caffe2onnx_supports(read_prototxt(nets[n][0])) for n in NETS}
    assert {n for n, c in chosen.items() if c} == set(CAFFE2ONNX_NETS)


def test_in_place_layers_keep_top_names(nets):
    proto, model = nets["resnet"]
    g = parse_caffe(proto, model)
    names = {v.name for v in g.values()}
    assert [v.name for v in g.outputs] == ["prob"]
    # conv1 -> BatchNorm -> Scale -> ReLU all in place: the last value is "conv1"
    assert g.values() and "conv1" in names
    producer = next(v for v in g.values() if v.name == "conv1").producer
    assert producer is not None and producer.op == "Relu" and producer.name == "conv1/relu"
    assert {"conv1/conv1", "conv1/conv1/bn"} <= names


def test_legacy_input_and_phase_rules(nets):
    proto, model = nets["vgg"]
    g = parse_caffe(proto, model)
    assert [(v.name, v.shape) for v in g.inputs] == [("data", (1, 3, 16, 16))]
    assert "train_only" not in {n.name for n in g.nodes}


def test_input_shape_override(nets, tmp_path: Path):
    proto, model = nets["mobilenet_ssd"]
    g = parse_caffe(proto, model, input_shapes={"data": [2, 3, 32, 32]})
    assert g.inputs[0].shape == (2, 3, 32, 32)
    assert g.outputs[0].shape == (2, 960)
