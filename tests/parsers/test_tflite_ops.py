"""TFLite front end: an assorted-op model (conv variants, resizes, pads, slices, ...) in
three forms, lowering details, and bad or unsupported input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from converter.cli import convert_command
from converter.pipeline import convert
from parsers.errors import BadModelError, InputShapeError, UnsupportedModelError
from parsers.tflite import parse_tflite
from parsers.tflite.ops import supported_ops
from tests.parsers.tflite_util import build_cached, check_int8

tf = pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tflite_ops")


@pytest.fixture(scope="module")
def zoo(root: Path) -> dict[str, Path]:
    return {form: build_cached(root, "conv_zoo", form) for form in ("float32", "float16", "int8")}


def _convert_fn(root: Path, name: str, fn, spec, custom: bool = False) -> Path:
    conc = tf.function(fn, input_signature=spec).get_concrete_function()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([conc])
    conv.allow_custom_ops = custom
    path = root / f"{name}.tflite"
    path.write_bytes(conv.convert())
    return path


@pytest.mark.parametrize("form", ["float32", "float16"])
def test_conv_zoo_float_verifies(zoo, tmp_path: Path, form: str):
    result = convert(zoo[form], fmk="TFLITE", output=tmp_path / "m.ms", verify=True)
    assert result.verify is not None and result.verify.passed


def test_conv_zoo_int8_within_one_step(zoo, tmp_path: Path):
    assert check_int8(zoo["int8"], tmp_path / "m.ms") <= 1


def test_conv_zoo_lowering_details(zoo):
    g = parse_tflite(zoo["float32"])
    ops = g.count_ops()
    assert {"ConvTranspose", "Resize", "DepthToSpace", "SpaceToDepth", "Pad"} <= set(ops)
    for n in g.nodes:
        if n.op in ("Conv", "ConvTranspose", "AveragePool", "MaxPool", "Resize"):
            assert n.attr("format") == "NHWC", n
    modes = {n.attr("mode") for n in g.nodes if n.op == "Pad"}
    assert "reflect" in modes  # REFLECT; SYMMETRIC is built from reversed slices
    dil = next(n for n in g.nodes if n.op == "Conv")
    assert dil.attr("dilations") == [2, 2] and dil.attr("pads") == [2, 2, 2, 2]


def test_strided_slice_masks_and_int_ops(root: Path, tmp_path: Path):
    spec = [tf.TensorSpec((2, 5, 6, 3), tf.float32)]

    def fn(x):
        a = x[..., 1:5:2, tf.newaxis, 0]  # ellipsis, new axis, shrink
        b = x[-1, ::-2, 2:, :]
        c = tf.reverse(x, [1]) * tf.cast(tf.argmin(x, axis=-1)[..., None], tf.float32)
        d = tf.unstack(x, axis=1)[3] + tf.gather_nd(x, [[0, 1], [1, 4]])
        e = tf.squeeze(tf.expand_dims(tf.reduce_prod(x, axis=[1], keepdims=True), 0), [0, 2])
        return a * 2.0, b, c, d, tf.nn.log_softmax(e) + tf.math.squared_difference(e, 1.0)

    src = _convert_fn(root, "slices", fn, spec)
    result = convert(src, fmk="TFLITE", output=tmp_path / "m.ms", verify=True)
    assert result.verify is not None and result.verify.passed
    assert len(result.verify.outputs) == 5


def test_truncated_file_is_bad_model(zoo, tmp_path: Path):
    data = zoo["float32"].read_bytes()
    bad = tmp_path / "cut.tflite"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(BadModelError) as exc:
        parse_tflite(bad)
    assert "\n" not in str(exc.value) and "truncated or corrupt" in str(exc.value)


def test_garbage_is_bad_model(tmp_path: Path):
    bad = tmp_path / "x.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(BadModelError, match="not a TensorFlow Lite model"):
        parse_tflite(bad)


def test_custom_ops_reported_once(root: Path):
    spec = [tf.TensorSpec((1, 3, 3), tf.float32)]
    src = _convert_fn(root, "custom", lambda x: tf.linalg.det(x) + tf.linalg.det(x * 2.0),
                      spec, custom=True)  # fmt: skip
    with pytest.raises(UnsupportedModelError) as exc:
        parse_tflite(src)
    assert list(exc.value.ops) == ["CUSTOM(MatrixDeterminant)"]
    assert "MatrixDeterminant" in str(exc.value)


def test_cli_custom_op_exit_2_one_line(root: Path, tmp_path: Path, capsys):
    spec = [tf.TensorSpec((1, 3, 3), tf.float32)]
    src = _convert_fn(root, "custom_cli", lambda x: tf.linalg.det(x), spec, custom=True)
    with pytest.raises(SystemExit) as exc:
        convert_command(["--fmk=TFLITE", f"--modelFile={src}",
                         f"--outputFile={tmp_path / 'o'}"])  # fmt: skip
    _, err = capsys.readouterr()
    assert exc.value.code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "MatrixDeterminant" in lines[0]


def test_cli_truncated_exit_2(zoo, tmp_path: Path, capsys):
    bad = tmp_path / "cut.tflite"
    bad.write_bytes(zoo["float32"].read_bytes()[:200])
    with pytest.raises(SystemExit) as exc:
        convert_command(["--fmk=TFLITE", str(bad), str(tmp_path / "o.ms")])
    _, err = capsys.readouterr()
    assert exc.value.code == 2 and len([ln for ln in err.splitlines() if ln.strip()]) == 1


def test_unknown_input_shape_name(zoo):
    with pytest.raises(InputShapeError, match="nope"):
        parse_tflite(zoo["float32"], input_shapes={"nope": [1, 16, 16, 4]})


def test_supported_ops_table():
    ops = supported_ops()
    for name in ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED",
                 "UNIDIRECTIONAL_SEQUENCE_LSTM", "STRIDED_SLICE", "QUANTIZE", "DEQUANTIZE",
                 "DENSIFY", "RESIZE_NEAREST_NEIGHBOR", "HARD_SWISH", "GATHER_ND"):  # fmt: skip
        assert name in ops
    assert np.all(np.diff([len(o) > 0 for o in ops]) == 0)


def test_densify_sparse_weights(root: Path, tmp_path: Path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 32)).astype(np.float32)
    w[rng.random(w.shape) < 0.8] = 0
    wc = tf.constant(w)
    conc = tf.function(lambda x: tf.matmul(x, wc),
                       input_signature=[tf.TensorSpec((1, 16), tf.float32)]
                       ).get_concrete_function()  # fmt: skip
    conv = tf.lite.TFLiteConverter.from_concrete_functions([conc])
    conv.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    src = root / "sparse.tflite"
    src.write_bytes(conv.convert())
    g = parse_tflite(src)
    mm = next(n for n in g.nodes if n.op == "MatMul")
    np.testing.assert_array_equal(mm.inputs[1].const, w)  # FC [out, in] transposed back
    result = convert(src, fmk="TFLITE", output=tmp_path / "m.ms", verify=True)
    assert result.verify is not None and result.verify.passed
