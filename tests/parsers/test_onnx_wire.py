"""Big ONNX files: raw_data stays in the mapped file instead of being copied twice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import parsers.onnx.loader as loader
from parsers.errors import BadModelError
from parsers.onnx import parse_onnx
from parsers.onnx.wire import split_raw_data


def _model(path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    big = rng.standard_normal((64, 300)).astype(np.float32)  # 76.8 KB: stripped
    small = np.arange(4, dtype=np.float32)  # stays inline
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "big"], ["h"], name="mm"),
            helper.make_node("Add", ["h", "bias"], ["y"], name="add"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 300])],
        [numpy_helper.from_array(big, "big"), numpy_helper.from_array(small[:1], "bias")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path, big, small[:1]


def test_split_strips_large_raw_data_only(tmp_path: Path):
    path, big, _ = _model(tmp_path / "m.onnx")
    split = split_raw_data(path, threshold=1024)
    assert split is not None and set(split.spans) == {"big"}
    stripped = onnx.ModelProto.FromString(split.stripped)
    inits = {t.name: t for t in stripped.graph.initializer}
    assert not inits["big"].HasField("raw_data") and list(inits["big"].dims) == [64, 300]
    assert inits["bias"].HasField("raw_data")
    offset, length = split.spans["big"]
    assert bytes(split.buffer[offset : offset + length]) == big.tobytes()


def test_parser_reads_stripped_initializers_zero_copy(tmp_path: Path, monkeypatch):
    path, big, bias = _model(tmp_path / "m.onnx")
    monkeypatch.setattr(loader, "_SPLIT_FILE_BYTES", 0)
    graph = parse_onnx(path)
    consts = {v.name: v.const for v in graph.constants()}
    np.testing.assert_array_equal(consts["big"], big)
    np.testing.assert_array_equal(consts["bias"], bias)
    assert not consts["big"].flags.owndata and not consts["big"].flags.writeable


@pytest.mark.parametrize("cut", [0.3, 0.7])
def test_truncated_big_file_still_reports_bad_model(tmp_path: Path, monkeypatch, cut: float):
    path, *_ = _model(tmp_path / "m.onnx")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])
    monkeypatch.setattr(loader, "_SPLIT_FILE_BYTES", 0)
    with pytest.raises(BadModelError):
        parse_onnx(path)
