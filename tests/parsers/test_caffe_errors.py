"""Caffe front end: bad input gives one clear error (exit 2 on the command line)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.models_caffe import write_net
from converter.cli import convert_command
from parsers.caffe import parse_caffe
from parsers.caffe.proto import caffe_message
from parsers.errors import BadModelError, InputShapeError, UnsupportedModelError


@pytest.fixture(scope="module")
def vgg(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_net("vgg", tmp_path_factory.mktemp("caffe_vgg"), seed=0)


def _cli(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        convert_command(args)
    _, err = capsys.readouterr()
    return int(exc.value.code), err


def _edit_model(model: Path, out: Path, edit) -> Path:
    net = caffe_message("NetParameter")()
    net.ParseFromString(model.read_bytes())
    edit(net)
    out.write_bytes(net.SerializeToString())
    return out


def test_syntax_error_names_line_and_column(tmp_path, vgg, capsys):
    bad = tmp_path / "bad.prototxt"
    bad.write_text('name: "x"\nlayer { name: "a" type: "ReLU"\n  bottom: "data" top: }\n')
    with pytest.raises(BadModelError, match=r"line 3, column \d+"):
        parse_caffe(bad, vgg[1])
    code, err = _cli(["--fmk=CAFFE", f"--modelFile={bad}", f"--weightFile={vgg[1]}",
                      f"--outputFile={tmp_path / 'o'}"], capsys)  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1 and "line 3" in err


def test_blob_shape_mismatch_names_the_layer(tmp_path, vgg, capsys):
    def shrink(net):
        layer = next(layer for layer in net.layer if layer.name == "conv2_1")
        del layer.blobs[0].shape.dim[:]
        layer.blobs[0].shape.dim.extend([16, 8, 3, 1])
        del layer.blobs[0].data[16 * 8 * 3 :]

    model = _edit_model(vgg[1], tmp_path / "m.caffemodel", shrink)
    with pytest.raises(BadModelError, match="conv2_1.*shape"):
        parse_caffe(vgg[0], model)
    code, err = _cli(["--fmk=CAFFE", f"--modelFile={vgg[0]}", f"--weightFile={model}",
                      f"--outputFile={tmp_path / 'o'}"], capsys)  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1 and "conv2_1" in err


def test_missing_layer_weights(tmp_path, vgg):
    def drop(net):
        keep = [layer for layer in net.layer if layer.name != "fc6"]
        del net.layer[:]
        net.layer.extend(keep)

    model = _edit_model(vgg[1], tmp_path / "m.caffemodel", drop)
    with pytest.raises(BadModelError, match="'fc6' .*no weights"):
        parse_caffe(vgg[0], model)


def test_blob_count_mismatch(tmp_path, vgg):
    model = _edit_model(vgg[1], tmp_path / "m.caffemodel",
                        lambda net: net.layer[0].blobs.add())  # fmt: skip
    with pytest.raises(BadModelError, match="3 blobs"):
        parse_caffe(vgg[0], model)


def test_not_a_caffemodel(tmp_path, vgg):
    junk = tmp_path / "junk.caffemodel"
    junk.write_bytes(b"\xff\xff\xff\xff garbage")
    with pytest.raises(BadModelError, match="not a binary Caffe NetParameter"):
        parse_caffe(vgg[0], junk)


def test_missing_weight_file_exit_2(tmp_path, vgg, capsys):
    code, err = _cli(["--fmk=CAFFE", f"--modelFile={vgg[0]}", f"--outputFile={tmp_path / 'o'}"],
                     capsys)  # fmt: skip
    assert code == 2 and "--weightFile" in err and len(err.strip().splitlines()) == 1


def test_unsupported_layers_reported_together(tmp_path, vgg):
    proto = tmp_path / "u.prototxt"
    proto.write_text(
        'input: "data" input_shape { dim: 1 dim: 3 dim: 4 dim: 4 }\n'
        'layer { name: "a" type: "Fancy" bottom: "data" top: "a" }\n'
        'layer { name: "b" type: "ReLU" bottom: "a" top: "b" }\n'
        'layer { name: "c" type: "Fancier" bottom: "data" top: "c" }\n'
        'layer { name: "d" type: "Pooling" bottom: "data" top: "d"\n'
        "  pooling_param { pool: STOCHASTIC kernel_size: 2 } }\n"
    )
    with pytest.raises(UnsupportedModelError) as exc:
        parse_caffe(proto, vgg[1])
    assert exc.value.ops == {"Fancy": "a", "Fancier": "c"}
    assert len(exc.value.problems) == 1 and "STOCHASTIC" in exc.value.problems[0]


def test_v1_layers_refused(tmp_path, vgg):
    proto = tmp_path / "v1.prototxt"
    proto.write_text('input: "data"\nlayers { name: "r" type: RELU bottom: "data" top: "r" }\n')
    with pytest.raises(UnsupportedModelError, match="V1"):
        parse_caffe(proto, vgg[1])


def test_unknown_input_shape_name(vgg):
    with pytest.raises(InputShapeError, match="nope"):
        parse_caffe(vgg[0], vgg[1], input_shapes={"nope": [1, 3, 8, 8]})


def test_cli_convert_and_verify(tmp_path, vgg, capsys):
    with pytest.raises(SystemExit) as exc:
        convert_command(["--fmk=CAFFE", f"--modelFile={vgg[0]}", f"--weightFile={vgg[1]}",
                         f"--outputFile={tmp_path / 'vgg'}", "--verify"])  # fmt: skip
    out, err = capsys.readouterr()
    assert exc.value.code == 0, err
    assert (tmp_path / "vgg.ms").exists() and "prob" in err
