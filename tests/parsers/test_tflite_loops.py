"""TFLite control flow: Keras 3 recurrent layers (WHILE loops out of TFLiteConverter)
become one IR LSTM / GRU / RNN node each; other loops, IF and CALL_ONCE lower to IR
Loop / If bodies. Everything is verified against LiteRT."""

from __future__ import annotations

from pathlib import Path

import pytest

from converter.pipeline import convert
from parsers.errors import UnsupportedModelError
from parsers.tflite import parse_tflite
from parsers.tflite.ops import supported_ops
from tests.parsers.tflite_util import build_cached

tf = pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

# name -> (builder, form, builder kwargs, expected op counts)
MODELS: dict[str, tuple[str, str, dict, dict[str, int]]] = {
    "lstm_seq": ("keras_lstm", "float32", {}, {"LSTM": 1}),
    "lstm_state": ("keras_lstm", "float32", {"sequences": False, "state": True}, {"LSTM": 1}),
    "lstm_relu": ("keras_lstm", "float32", {"activation": "relu"}, {"LSTM": 1}),
    "lstm_f16": ("keras_lstm", "float16", {}, {"LSTM": 1}),
    "bilstm_stacked": ("keras_lstm", "float32", {"bidirectional": True, "stacked": True},
                       {"LSTM": 3}),
    "gru_seq": ("keras_gru", "float32", {}, {"GRU": 1}),
    "gru_last": ("keras_gru", "float32", {"sequences": False}, {"GRU": 1}),
    "gru_f16_stacked": ("keras_gru", "float16", {"stacked": True}, {"GRU": 2}),
    "simple_rnn": ("keras_simple_rnn", "float32", {"state": True}, {"RNN": 1}),
    # not a recognised cell: generic Loop
    "gru_reset_before": ("keras_gru", "float32", {"reset_after": False}, {"Loop": 1}),
    "lstm_hard_sigmoid": ("keras_lstm", "float32", {"recurrent_activation": "hard_sigmoid"},
                          {"Loop": 1}),
    "while_loop": ("while_loop", "float32", {}, {"Loop": 1, "If": 2}),
}  # fmt: skip
RECURRENT = ("LSTM", "GRU", "RNN")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tflite_loops")
    return {
        name: build_cached(root, builder, form, **kw)
        for name, (builder, form, kw, _) in MODELS.items()
    }


@pytest.mark.parametrize("name", list(MODELS))
def test_converts_and_verifies(models, tmp_path: Path, name: str):
    result = convert(models[name], fmk="TFLITE", output=tmp_path / "m.ms", verify=True)
    assert result.verify is not None and result.verify.passed
    assert all(m.cosine >= 0.9999 for m in result.verify.outputs)


@pytest.mark.parametrize("name", list(MODELS))
def test_ir_structure(models, name: str):
    """Recurrent loops: exactly the expected cells and no Loop; others: Loop, no cell."""
    ops = parse_tflite(models[name]).count_ops()
    expected = MODELS[name][3]
    for op in (*RECURRENT, "Loop", "If"):
        assert ops.get(op, 0) == expected.get(op, 0), (op, ops)


def test_lstm_node_details(models):
    g = parse_tflite(models["lstm_relu"])
    (n,) = [n for n in g.nodes if n.op == "LSTM"]
    assert n.attr("hidden_size") == 12 and n.attr("layout") == 0
    assert n.attr("activations") == ["Sigmoid", "Relu", "Relu"]
    assert n.inputs[1].const.shape == (1, 48, 6) and n.inputs[2].const.shape == (1, 48, 12)
    assert n.inputs[3].const.shape == (1, 96) and not n.inputs[3].const[0, 48:].any()
    assert n.inputs[0].shape == (8, 1, 6)  # the time-major input list


def test_gru_node_details(models):
    g = parse_tflite(models["gru_seq"])
    (n,) = [n for n in g.nodes if n.op == "GRU"]
    assert n.attr("linear_before_reset") == 1 and n.attr("hidden_size") == 12
    b = n.inputs[3].const
    assert b.shape == (1, 72) and b[0, :36].any() and b[0, 36:].any()  # input, recurrent


def test_loop_body_runs_body_then_cond(models):
    g = parse_tflite(models["while_loop"])
    (loop,) = [n for n in g.nodes if n.op == "Loop"]
    body = loop.attr("body")
    assert loop.inputs[0] is None and loop.inputs[1].dtype.name == "BOOL"
    assert len(body.inputs) == len(loop.inputs)  # iter, cond, v... vs M, cond, v...
    assert len(body.outputs) == 1 + len(loop.outputs)
    inner = body.count_ops()
    assert inner.get("If") == 1 and inner.get("And") == 1  # the body's IF, then the cond


def _from_fn(root: Path, name: str, fn, spec, **options) -> Path:
    conc = tf.function(fn, input_signature=spec).get_concrete_function()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([conc])
    for key, value in options.items():
        setattr(conv, key, value)
    path = root / f"{name}.tflite"
    path.write_bytes(conv.convert())
    return path


def test_call_once_and_resource_variables(tmp_path: Path):
    class Counter(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.v = tf.Variable(tf.fill((1, 4), 0.5))

        @tf.function(input_signature=[tf.TensorSpec((1, 4), tf.float32)])
        def fn(self, x):  # noqa: ANN001, ANN202
            self.v.assign(self.v * 0.9 + x)
            return self.v * 2.0

    m = Counter()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([m.fn.get_concrete_function()], m)
    conv.experimental_enable_resource_variables = True
    src = tmp_path / "var.tflite"
    src.write_bytes(conv.convert())
    ops = parse_tflite(src).count_ops()
    assert "CALL_ONCE" not in ops and "READ_VARIABLE" not in ops
    result = convert(src, fmk="TFLITE", output=tmp_path / "m.ms", verify=True)
    assert result.verify is not None and result.verify.passed


def test_unsupported_op_in_loop_body_reported(tmp_path: Path):
    def fn(x):  # noqa: ANN001, ANN202
        return tf.while_loop(lambda i, y: i < 3,
                             lambda i, y: (i + 1, y * tf.linalg.det(y)[:, None, None]),
                             [tf.constant(0), x])[1]  # fmt: skip

    src = _from_fn(tmp_path, "det_loop", fn, [tf.TensorSpec((1, 3, 3), tf.float32)],
                   allow_custom_ops=True)  # fmt: skip
    with pytest.raises(UnsupportedModelError) as exc:
        parse_tflite(src)
    assert list(exc.value.ops) == ["CUSTOM(MatrixDeterminant)"]


def test_control_flow_in_supported_ops():
    assert {"WHILE", "IF", "CALL_ONCE", "VAR_HANDLE", "READ_VARIABLE",
            "ASSIGN_VARIABLE"} <= set(supported_ops())  # fmt: skip


def test_flex_tensor_list_ops_reported_with_hint(tmp_path: Path):
    def fn(x):  # noqa: ANN001, ANN202
        ta = tf.TensorArray(tf.float32, size=4)
        ta = tf.while_loop(lambda i, t: i < 4, lambda i, t: (i + 1, t.write(i, x * 2.0)),
                           [tf.constant(0), ta])[1]  # fmt: skip
        return ta.stack()

    select = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    conc = tf.function(fn, input_signature=[tf.TensorSpec((2,), tf.float32)])
    conv = tf.lite.TFLiteConverter.from_concrete_functions([conc.get_concrete_function()])
    conv.target_spec.supported_ops = select
    conv._experimental_lower_tensor_list_ops = False
    src = tmp_path / "flex.tflite"
    src.write_bytes(conv.convert())
    with pytest.raises(UnsupportedModelError) as exc:
        parse_tflite(src)
    assert any(op.startswith("CUSTOM(FlexTensorList") for op in exc.value.ops)
    assert "TFLITE_BUILTINS only" in str(exc.value)
