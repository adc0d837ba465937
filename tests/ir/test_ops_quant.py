"""Declarations and shape inference of the quantization (ai.onnx) and com.microsoft ops."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx.defs
import pytest
from onnxruntime.capi import onnxruntime_pybind11_state as ort_c

import ir
from ir import DataType, Trait
from ir.ops import contrib, quant

F, U8, I8, I32 = DataType.FLOAT, DataType.UINT8, DataType.INT8, DataType.INT32


def infer(
    op: str, inputs: list[Any], attrs: dict[str, Any] | None = None, n_out: int = 1
) -> list[tuple[DataType, Any]]:
    """Infer a node whose inputs are (dtype, shape) pairs, arrays (constants) or None."""
    values: list[ir.Value | None] = []
    for i, item in enumerate(inputs):
        if item is None:
            values.append(None)
        elif isinstance(item, np.ndarray):
            values.append(ir.Value(f"c{i}", const=item))
        else:
            values.append(ir.Value(f"i{i}", item[0], item[1]))
    node = ir.Node(op, values, n_out, attrs or {})
    return ir.get_op(op).infer(node)


def test_quant_ops_follow_the_onnx_schema() -> None:
    for opdef in quant.OPS:
        schema = onnx.defs.get_schema(opdef.name)
        assert set(opdef.attrs) - {"format"} == set(schema.attributes), opdef.name
        assert [i.rstrip("?*") for i in opdef.inputs] == [i.name for i in schema.inputs]
        assert [o.rstrip("?*") for o in opdef.outputs] == [o.name for o in schema.outputs]
        assert opdef.has(Trait.LAYOUT_SENSITIVE) == ("format" in opdef.attrs)
        assert opdef.domain == "ai.onnx" and opdef.infer is not None


def _ort_schemas() -> dict[tuple[str, str], Any]:
    return {(s.domain or "ai.onnx", s.name): s for s in ort_c.get_all_operator_schema()}


def test_contrib_ops_follow_onnxruntime_schemas() -> None:
    """Inputs/outputs in onnxruntime's order; attributes a subset (channels_last -> format)."""
    schemas = _ort_schemas()
    for opdef in contrib.OPS:
        domain = "" if opdef.domain == "ai.onnx" else opdef.domain
        onnx_name = opdef.name.removeprefix("Ms")  # MsAttention is com.microsoft Attention
        schema = schemas[(domain or "ai.onnx", onnx_name)]
        assert [i.rstrip("?*") for i in opdef.inputs] == [i.name for i in schema.inputs]
        assert [o.rstrip("?*") for o in opdef.outputs] == [o.name for o in schema.outputs]
        extra = set(opdef.attrs) - set(schema.attributes) - {"format"}
        assert not extra, (opdef.name, extra)
        assert opdef.infer is not None


@pytest.mark.parametrize(
    ("inputs", "attrs", "want"),
    [
        ([(F, (2, "n")), (F, ())], {}, (U8, (2, "n"))),
        ([(F, (2, 3)), (F, ()), (I8, ())], {}, (I8, (2, 3))),
        ([(F, None), (F, (3,))], {"output_dtype": int(DataType.INT4)}, (DataType.INT4, None)),
    ],
)
def test_infer_quantize(inputs: list, attrs: dict, want: tuple) -> None:
    assert infer("QuantizeLinear", inputs, attrs) == [want]


def test_infer_dequantize_and_dynamic() -> None:
    assert infer("DequantizeLinear", [(I8, (4, None)), (F, ())]) == [(F, (4, None))]
    out = infer("DequantizeLinear", [(I8, (4,)), (DataType.FLOAT16, ())],
                {"output_dtype": int(F)})
    assert out == [(F, (4,))]
    assert infer("DynamicQuantizeLinear", [(F, ("b", 3))], n_out=3) == [
        (U8, ("b", 3)), (F, ()), (U8, ())]


def _qconv_inputs(x: Any, w: Any) -> list[Any]:
    s = (F, ())
    return [(U8, x), s, (U8, ()), (I8, w), s, (I8, ()), s, (U8, ())]


@pytest.mark.parametrize(
    ("x", "w", "attrs", "want"),
    [
        ((1, 3, 8, 8), (4, 3, 3, 3), {"pads": [1, 1, 1, 1]}, (1, 4, 8, 8)),
        (("n", 3, 9, 9), (4, 3, 3, 3), {"strides": [2, 2]}, ("n", 4, 4, 4)),
        ((1, 8, 8, 3), (4, 3, 3, 3), {"format": "NHWC"}, (1, 6, 6, 4)),
        ((1, 3, None, 8), (4, 3, 3, 3), {}, (1, 4, None, None)),
        (None, (4, 3, 3, 3), {}, None),
    ],
)
def test_infer_qlinear_conv(x: Any, w: Any, attrs: dict, want: Any) -> None:
    assert infer("QLinearConv", _qconv_inputs(x, w), attrs) == [(U8, want)]
    assert infer("ConvInteger", [(U8, x), (U8, w)], attrs) == [(I32, want)]
    assert infer("FusedConv", [(F, x), (F, w)], attrs) == [(F, want)]


def test_infer_matmuls() -> None:
    s = (F, ())
    q = [(I8, ("b", 5, 16)), s, (I8, ()), (I8, (16, 4)), s, (I8, ()), s, (I8, ())]
    assert infer("QLinearMatMul", q) == [(I8, ("b", 5, 4))]
    assert infer("MatMulInteger", [(U8, (3, 7)), (I8, (7, 2))]) == [(I32, (3, 2))]
    assert infer("MatMulIntegerToFloat", [(U8, (3, 7)), (I8, (7, 2)), s, s]) == [(F, (3, 2))]
    assert infer("DynamicQuantizeMatMul", [(F, (3, 7)), (I8, (7, 2)), s]) == [(F, (3, 2))]
    fused = infer("FusedMatMul", [(F, (3, 2, 4)), (F, (5, 2, 4))],
                  {"transBatchA": 1, "transBatchB": 1, "transB": 1})
    assert fused == [(F, (2, 3, 5))]
    qgemm = [(U8, (5, 16)), s, (U8, ()), (I8, (6, 16)), s, (I8, ())]
    assert infer("QGemm", qgemm, {"transB": 1}) == [(F, (5, 6))]
    assert infer("QGemm", [*qgemm, None, s, (U8, ())], {"transB": 1}) == [(U8, (5, 6))]


def test_infer_norms_and_attention() -> None:
    x = (F, ("b", "s", 16))
    out = infer("SkipLayerNormalization", [x, x, (F, (16,))], n_out=4)
    assert out == [(F, x[1]), (F, ("b", "s", 1)), (F, ("b", "s", 1)), (F, x[1])]
    assert infer("SimplifiedLayerNormalization", [(F, (2, 3, 4)), (F, (3, 4))],
                 {"axis": 1}, n_out=2) == [(F, (2, 3, 4)), (F, (2, 1, 1))]
    att = infer("MsAttention", [(F, (2, 5, 6)), (F, (6, 24))], {"num_heads": 2})
    assert att == [(F, (2, 5, 8))]
    mha = infer("MsMultiHeadAttention", [(F, (2, 3, 8)), (F, (2, 5, 8)), (F, (2, 5, 12))],
                {"num_heads": 2})
    assert mha == [(F, (2, 3, 12))]
    nbits = infer("MatMulNBits", [(F, ("b", 3, 40)), (U8, (6, 3, 8)), (F, (6, 3))],
                  {"K": 40, "N": 6, "block_size": 16})
    assert nbits == [(F, ("b", 3, 6))]


def test_infer_qlinear_elementwise_and_pool() -> None:
    s, z = (F, ()), (U8, ())
    add = infer("QLinearAdd", [(U8, (2, 1, 4)), s, z, (U8, (3, 1)), s, z, s, z])
    assert add == [(U8, (2, 3, 4))]
    gap = [(U8, (2, 5, 6, 7)), s, z, s, z]
    assert infer("QLinearGlobalAveragePool", gap) == [(U8, (2, 5, 1, 1))]
    gap[0] = (U8, (2, 6, 7, 5))
    assert infer("QLinearGlobalAveragePool", gap, {"format": "NHWC"}) == [(U8, (2, 1, 1, 5))]
    cat = [s, z, (U8, (2, 3)), s, z, (U8, (2, "k")), s, z]
    assert infer("QLinearConcat", cat, {"axis": 1}) == [(U8, (2, None))]
    cat[5] = (U8, (2, 4))
    assert infer("QLinearConcat", cat, {"axis": -1}) == [(U8, (2, 7))]


def test_infer_dynamic_quantize_lstm() -> None:
    s = (F, (2,))
    inputs = [(F, (6, "b", 5)), (I8, (2, 5, 16)), (I8, (2, 4, 16)), None, None, None, None,
              None, s, (I8, (2,)), s, (I8, (2,))]
    out = infer("DynamicQuantizeLSTM", inputs, {"direction": "bidirectional"}, n_out=3)
    assert out == [(F, (6, 2, "b", 4)), (F, (2, "b", 4)), (F, (2, "b", 4))]


_REQUIRED = {"num_heads": 2, "K": 8, "N": 4, "block_size": 16, "axis": 1,
             "is_inner_broadcast": 0}


@pytest.mark.parametrize("opdef", [*quant.OPS, *contrib.OPS], ids=lambda o: o.name)
@pytest.mark.parametrize("shape", [None, ("a", "b", "c", "d")], ids=["unknown", "symbolic"])
def test_infer_never_crashes(opdef: Any, shape: Any) -> None:
    """Unknown or symbolic input shapes give (possibly unknown) results, never errors."""
    n_in = len(opdef.inputs) + (2 if opdef.max_inputs is None else 0)
    n_out = len(opdef.outputs)
    attrs = {k: _REQUIRED[k] for k, a in opdef.attrs.items() if a.required}
    out = infer(opdef.name, [(U8, shape)] * n_in, attrs, n_out=n_out)
    assert len(out) == n_out
