"""TFLite front end on sequence models: a fused LSTM stack (UNIDIRECTIONAL_SEQUENCE_LSTM)
and a transformer block (MultiHeadAttention + LayerNormalization), float32,
float16-weight and full-int8, verified against LiteRT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from converter.pipeline import convert
from parsers.tflite import parse_tflite
from tests.parsers.tflite_util import build_cached, check_int8

pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

ARCHS = {"lstm": {"steps": 8}, "transformer": {}}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    root = tmp_path_factory.mktemp("tflite_seq")
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


def test_lstm_becomes_ir_lstm_with_onnx_gate_order(models):
    g = parse_tflite(models["lstm", "float32"])
    lstms = [n for n in g.nodes if n.op == "LSTM"]
    assert len(lstms) == 2
    n = lstms[0]
    assert n.attr("layout") == 1 and n.attr("hidden_size") == 16
    w = n.inputs[1].const
    assert w.shape == (1, 64, 8)
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(models["lstm", "float32"]))
    op = interp._get_ops_details()[0]  # the first UNIDIRECTIONAL_SEQUENCE_LSTM
    assert op["op_name"] == "UNIDIRECTIONAL_SEQUENCE_LSTM"
    interp.allocate_tensors()
    gates = [interp.get_tensor(int(op["inputs"][k])) for k in (1, 2, 3, 4)]  # i, f, c, o
    np.testing.assert_array_equal(w[0], np.concatenate([gates[0], gates[3], gates[1], gates[2]]))


def test_lstm_with_active_cell_clip_is_unrolled(tmp_path_factory: pytest.TempPathFactory):
    """12 steps > cell_clip 10: the clip may bite, so the LSTM is lowered step by step."""
    src = build_cached(tmp_path_factory.mktemp("tflite_lstm12"), "lstm", "float32", steps=12)
    g = parse_tflite(src)
    ops = g.count_ops()
    assert "LSTM" not in ops and ops["Clip"] == 24
    result = convert(src, fmk="TFLITE", output=tmp_path_factory.mktemp("o") / "m.ms",
                     verify=True)  # fmt: skip
    assert result.verify is not None and result.verify.passed
