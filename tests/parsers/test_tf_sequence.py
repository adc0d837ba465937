"""Keras sequence models through the TF front end, verified against TensorFlow.

LSTM and GRU layers arrive as exactly one IR LSTM / GRU node (not a Loop); the
transformer block (MultiHeadAttention, LayerNormalization, GELU Dense) goes op by op.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("tensorflow")

import converter  # noqa: E402
from benchmarks import models_tf  # noqa: E402
from parsers.errors import UnsupportedModelError  # noqa: E402
from parsers.tf import parse_tf  # noqa: E402


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """SavedModel folders (and one frozen .pb) built once for the module."""
    root = tmp_path_factory.mktemp("tf_seq")
    k = models_tf.keras()
    lstm = models_tf.lstm_model()
    paths = {
        "lstm": models_tf.save_saved_model(lstm, root / "lstm"),
        "lstm_pb": models_tf.save_frozen_pb(lstm, root / "lstm.pb"),
        "gru": models_tf.save_saved_model(models_tf.gru_model(), root / "gru"),
        "transformer": models_tf.save_saved_model(models_tf.transformer_block(), root / "tfm"),
    }
    inp = k.Input((7, 5))
    x, h, c = k.layers.LSTM(
        6, activation="relu", return_sequences=True, return_state=True,
        bias_initializer="random_normal",
    )(inp)  # fmt: skip
    paths["lstm_state"] = models_tf.save_saved_model(k.Model(inp, [x, h, c]), root / "state")
    inp = k.Input((7, 5))
    y = k.layers.Bidirectional(k.layers.GRU(4, return_sequences=True))(inp)
    paths["bidi"] = models_tf.save_saved_model(k.Model(inp, k.layers.LSTM(3)(y)), root / "bidi")
    inp = k.Input((7, 5))
    y = k.layers.GRU(4, reset_after=False)(inp)
    paths["gru_v1"] = models_tf.save_saved_model(k.Model(inp, y), root / "gru_v1")
    return paths


def _convert(path: Path, tmp_path: Path) -> Any:
    result = converter.convert(path, fmk="TF", output=tmp_path / "m.ms", verify=True)
    assert result.verify is not None and result.verify.passed
    assert all(m.cosine >= 0.9999 for m in result.verify.outputs)
    return result


@pytest.mark.parametrize(("case", "op"), [("lstm", "LSTM"), ("lstm_pb", "LSTM"), ("gru", "GRU")])
def test_recurrent_layer_is_one_node(saved: dict[str, Path], tmp_path: Path, case: str, op: str):
    result = _convert(saved[case], tmp_path)
    ops = result.graph.count_ops()
    assert ops[op] == 1
    assert not {"Loop", "Scan", "If"} & set(ops)
    parsed = parse_tf(saved[case]).count_ops()
    assert parsed[op] == 1 and "Loop" not in parsed


def test_gru_reset_after_is_linear_before_reset(saved: dict[str, Path]) -> None:
    graph = parse_tf(saved["gru"])
    (gru,) = [n for n in graph.all_nodes() if n.op == "GRU"]
    assert gru.attr("linear_before_reset") == 1
    assert gru.inputs[3] is not None and gru.inputs[3].shape == (1, 48)  # [Wb, Rb], 3 * 8 each


def test_signature_names_inputs_and_outputs(saved: dict[str, Path]) -> None:
    graph = parse_tf(saved["lstm"])
    assert [v.name for v in graph.inputs] == ["tokens"]
    assert [v.name for v in graph.outputs] == ["output_0"]
    assert [v.name for v in parse_tf(saved["lstm_pb"]).outputs] == ["Identity"]


def test_lstm_states_relu_and_sequences(saved: dict[str, Path], tmp_path: Path) -> None:
    result = _convert(saved["lstm_state"], tmp_path)
    (lstm,) = [n for n in result.graph.all_nodes() if n.op == "LSTM"]
    assert lstm.attr("activations") == ["Sigmoid", "Relu", "Relu"]
    assert len(result.verify.outputs) == 3


def test_bidirectional_and_stacked(saved: dict[str, Path], tmp_path: Path) -> None:
    ops = _convert(saved["bidi"], tmp_path).graph.count_ops()
    assert ops["GRU"] == 2 and ops["LSTM"] == 1


def test_gru_reset_before_is_refused_clearly(saved: dict[str, Path]) -> None:
    with pytest.raises(UnsupportedModelError, match="reset_after=True") as info:
        parse_tf(saved["gru_v1"])
    assert len(info.value.problems) == 1


def test_transformer_block(saved: dict[str, Path], tmp_path: Path) -> None:
    ops = _convert(saved["transformer"], tmp_path).graph.count_ops()
    assert ops["Softmax"] == 1  # one attention
    assert ops["Erf"] == 1  # exact GELU: x * (1 - erf(-x / sqrt 2)) / 2
