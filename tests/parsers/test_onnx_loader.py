"""Reading ONNX files: bad files, initializers, external data, input shapes, type inference."""

from __future__ import annotations

import os
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ir import DataType
from parsers.errors import BadModelError, InputShapeError, ParseError
from parsers.onnx import parse_onnx

F = TensorProto.FLOAT


def _add_model(weight: onnx.TensorProto, shape: list | None = None) -> onnx.ModelProto:
    """y = x + w, with w an initializer."""
    shape = shape or list(weight.dims)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", weight.name], ["y"], name="add")],
        "g",
        [helper.make_tensor_value_info("x", weight.data_type, shape)],
        [helper.make_tensor_value_info("y", weight.data_type, shape)],
        initializer=[weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def _external_model(tmp_path: Path, location: str, data: np.ndarray) -> Path:
    tensor = numpy_helper.from_array(data, "w")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value=location)
    tensor.external_data.add(key="offset", value="16")
    tensor.external_data.add(key="length", value=str(data.nbytes))
    path = tmp_path / "model" / "m.onnx"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(_add_model(tensor).SerializeToString())
    return path


def _write_data(path: Path, data: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x07" * 16 + data.tobytes())


W = np.arange(12, dtype=np.float32).reshape(3, 4)


def test_external_data_is_memory_mapped(tmp_path: Path) -> None:
    path = _external_model(tmp_path, "weights/w.bin", W)
    _write_data(path.parent / "weights" / "w.bin", W)
    g = parse_onnx(path)
    w = g.nodes[0].input(1)
    assert w is not None and w.is_const
    np.testing.assert_array_equal(w.const, W)
    assert not w.const.flags.writeable
    base = w.const
    while getattr(base, "base", None) is not None and not isinstance(base, np.memmap):
        base = base.base
    assert isinstance(base, (np.memmap, memoryview)) or "mmap" in type(base).__name__


@pytest.mark.parametrize("location", ["../escape.bin", "sub/../../escape.bin"])
def test_external_data_escaping_folder(tmp_path: Path, location: str) -> None:
    path = _external_model(tmp_path, location, W)
    _write_data(tmp_path / "escape.bin", W)
    with pytest.raises(BadModelError, match="escapes the model folder"):
        parse_onnx(path)


def test_external_data_absolute_path(tmp_path: Path) -> None:
    target = tmp_path / "abs.bin"
    _write_data(target, W)
    path = _external_model(tmp_path, str(target), W)
    with pytest.raises(BadModelError, match="escapes the model folder"):
        parse_onnx(path)


def test_external_data_symlink_escaping(tmp_path: Path) -> None:
    _write_data(tmp_path / "outside.bin", W)
    path = _external_model(tmp_path, "link.bin", W)
    os.symlink(tmp_path / "outside.bin", path.parent / "link.bin")
    with pytest.raises(BadModelError, match="escapes the model folder"):
        parse_onnx(path)


def test_external_data_missing_file(tmp_path: Path) -> None:
    path = _external_model(tmp_path, "nothere.bin", W)
    with pytest.raises(BadModelError, match="missing"):
        parse_onnx(path)


def test_external_data_too_short(tmp_path: Path) -> None:
    path = _external_model(tmp_path, "w.bin", W)
    (path.parent / "w.bin").write_bytes(b"\0" * 20)
    with pytest.raises(BadModelError, match="does not fit"):
        parse_onnx(path)


def test_external_data_needs_path_for_proto(tmp_path: Path) -> None:
    path = _external_model(tmp_path, "w.bin", W)
    _write_data(path.parent / "w.bin", W)
    with pytest.raises(BadModelError, match="pass the model path"):
        parse_onnx(onnx.load(str(path), load_external_data=False))


def test_truncated_file(tmp_path: Path) -> None:
    data = _add_model(numpy_helper.from_array(W, "w")).SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadModelError, match="cut.onnx"):
        parse_onnx(path)


def test_garbage_bytes(tmp_path: Path) -> None:
    path = tmp_path / "junk.onnx"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(BadModelError, match="junk.onnx"):
        parse_onnx(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BadModelError, match="does not exist"):
        parse_onnx(tmp_path / "none.onnx")


def test_not_a_model(tmp_path: Path) -> None:
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(BadModelError, match="not an ONNX model"):
        parse_onnx(path)


def test_errors_share_a_base() -> None:
    assert issubclass(BadModelError, ParseError) and issubclass(InputShapeError, ParseError)


@pytest.mark.parametrize(
    "array",
    [
        np.arange(6, dtype=np.float16).reshape(2, 3),
        np.arange(6, dtype=np.float32).astype(ml_dtypes.bfloat16).reshape(2, 3),
        np.array([[-8, -1, 0], [1, 5, 7]], dtype=ml_dtypes.int4),
        np.array([[0, 1, 2], [9, 14, 15]], dtype=ml_dtypes.uint4),
        np.array([[0.5, -1, 2], [4, -6, 0]], dtype=ml_dtypes.float8_e4m3fn),
        np.arange(6, dtype=np.int64).reshape(2, 3),
    ],
    ids=lambda a: str(a.dtype),
)
def test_initializer_dtypes(array: np.ndarray) -> None:
    g = parse_onnx(_add_model(numpy_helper.from_array(array, "w")))
    w = g.nodes[0].input(1)
    assert w is not None and w.const is not None
    assert w.const.dtype == array.dtype and w.dtype == DataType.from_numpy(array.dtype)
    np.testing.assert_array_equal(w.const.astype(np.float32), array.astype(np.float32))


def test_typed_field_initializer() -> None:
    tensor = helper.make_tensor("w", F, [2, 2], [1.0, 2.0, 3.0, 4.0])  # float_data
    g = parse_onnx(_add_model(tensor))
    np.testing.assert_array_equal(g.nodes[0].input(1).const, [[1, 2], [3, 4]])  # type: ignore[union-attr]


def test_raw_initializer_is_a_view() -> None:
    g = parse_onnx(_add_model(numpy_helper.from_array(W, "w")))
    const = g.nodes[0].input(1).const  # type: ignore[union-attr]
    assert isinstance(const.base, (bytes, np.ndarray)) and not const.flags.writeable


def _dynamic_model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["r"]),
            helper.make_node("Shape", ["r"], ["s"]),
            helper.make_node("Reshape", ["r", "s"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", F, ["batch", 3, None])],
        [helper.make_tensor_value_info("y", F, None)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def test_dynamic_dims_kept_symbolic() -> None:
    g = parse_onnx(_dynamic_model())
    assert g.inputs[0].shape == ("batch", 3, None)
    relu_shape = g.nodes[0].outputs[0].shape
    assert relu_shape is not None and relu_shape[:2] == ("batch", 3)


def test_input_shapes_pin_and_propagate() -> None:
    g = parse_onnx(_dynamic_model(), input_shapes={"x": [2, 3, 5]})
    assert g.inputs[0].shape == (2, 3, 5)
    assert g.outputs[0].shape == (2, 3, 5) and g.outputs[0].dtype == DataType.FLOAT


def test_input_shapes_unknown_name_lists_inputs() -> None:
    with pytest.raises(InputShapeError, match=r"no model input named 'z'.*'x'"):
        parse_onnx(_dynamic_model(), input_shapes={"z": [1]})


def test_input_shapes_rank_mismatch() -> None:
    with pytest.raises(InputShapeError, match="rank 3"):
        parse_onnx(_dynamic_model(), input_shapes={"x": [1, 3]})


def test_input_shapes_conflicting_static_dim() -> None:
    with pytest.raises(InputShapeError, match="dim 1 is 3"):
        parse_onnx(_dynamic_model(), input_shapes={"x": [1, 4, 5]})


def test_initializer_listed_as_input_is_constant() -> None:
    model = _add_model(numpy_helper.from_array(W, "w"))
    model.graph.input.append(helper.make_tensor_value_info("w", F, [3, 4]))
    g = parse_onnx(model)
    assert [v.name for v in g.inputs] == ["x"]
    assert g.nodes[0].input(1).is_const  # type: ignore[union-attr]


def test_large_initializers_still_typed(tmp_path: Path) -> None:
    """Big initializers are typed inputs during inference; shapes still flow."""
    big = np.ones((300, 300), np.float32)
    model = _add_model(numpy_helper.from_array(big, "w"), shape=[1, 300])
    model.graph.output[0].type.tensor_type.ClearField("shape")
    g = parse_onnx(model)
    assert g.outputs[0].shape == (300, 300)


def test_metadata_recorded() -> None:
    model = _add_model(numpy_helper.from_array(W, "w"))
    model.producer_name = "pytorch"
    g = parse_onnx(model)
    assert g.meta["producer"] == "pytorch" and g.opset == {"ai.onnx": 14}
