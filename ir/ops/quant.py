"""Quantization ops of the default ONNX domain (latest opset semantics).

* QuantizeLinear: ``y = saturate(round_half_even(x / y_scale) + y_zero_point)``; the
  division runs in ``precision`` (a DataType number; 0 = the dtype of ``y_scale``).
  Granularity follows the scale's shape: scalar (per tensor), 1-D along ``axis`` (per
  axis) or the input's rank with ``axis`` divided in blocks of ``block_size`` (blocked).
  Output type: ``output_dtype`` when non-zero, else the zero point's, else uint8.
  Float8 outputs round to nearest even and clamp to the largest finite value when
  ``saturate`` (else overflow becomes inf, or NaN for types without inf).
* DequantizeLinear: ``y = (x - x_zero_point) * x_scale`` in the output type
  (``output_dtype`` or the scale's dtype), same granularities.
* DynamicQuantizeLinear: uint8 quantization with a range that includes 0:
  ``scale = (max(0, max x) - min(0, min x)) / 255``,
  ``zero_point = saturate(round(0 - min(0, min x) / scale))``.
* QLinearConv / QLinearMatMul: integer conv / matmul of ``x - x_zero_point`` by
  ``w - w_zero_point`` (exact int32 accumulation, plus the int32 bias of QLinearConv),
  requantized by ``x_scale * w_scale / y_scale`` (per output channel / column when the
  weight scale is 1-D) and ``y_zero_point``.
* ConvInteger / MatMulInteger: the int32 conv / matmul of the zero-point-shifted operands.

QLinearConv and ConvInteger carry ``format`` like Conv (weights keep the ONNX layout).
"""

from __future__ import annotations

from ir.core import Node, Shape
from ir.dtypes import DataType
from ir.ops.base import INT, Trait, op
from ir.ops.infer import in_dtype, in_shape
from ir.ops.nn import CONV_ATTRS, conv_shape, matmul_shape

__all__ = ["OPS"]

Result = list[tuple[DataType, Shape | None]]
LS = Trait.LAYOUT_SENSITIVE

def _dtype_or(value: int, fallback: DataType) -> DataType:
    return DataType(value) if value else fallback


def _infer_quantize(node: Node) -> Result:
    zp = node.input(2)
    default = zp.dtype if zp is not None else DataType.UINT8
    return [(_dtype_or(node.attr("output_dtype"), default), in_shape(node))]


def _infer_dequantize(node: Node) -> Result:
    return [(_dtype_or(node.attr("output_dtype"), in_dtype(node, 1)), in_shape(node))]


def _infer_dynamic_quantize(node: Node) -> Result:
    return [(DataType.UINT8, in_shape(node)), (DataType.FLOAT, ()), (DataType.UINT8, ())]


def _infer_qlinear_conv(node: Node) -> Result:
    return [(in_dtype(node, 7), conv_shape(node, 0, 3))]


def _infer_conv_integer(node: Node) -> Result:
    return [(DataType.INT32, conv_shape(node, 0, 1))]


def _infer_qlinear_matmul(node: Node) -> Result:
    return [(in_dtype(node, 7), matmul_shape(in_shape(node), in_shape(node, 3)))]


def _infer_matmul_integer(node: Node) -> Result:
    return [(DataType.INT32, matmul_shape(in_shape(node), in_shape(node, 1)))]


OPS = (
    op("QuantizeLinear", "x y_scale y_zero_point?", "y",
       attrs={"axis": INT(1), "block_size": INT(0), "output_dtype": INT(0),
              "precision": INT(0), "saturate": INT(1)},
       infer=_infer_quantize,
       doc="y = saturate(round_half_even(x / y_scale) + y_zero_point)."),
    op("DequantizeLinear", "x x_scale x_zero_point?", "y",
       attrs={"axis": INT(1), "block_size": INT(0), "output_dtype": INT(0)},
       infer=_infer_dequantize, doc="y = (x - x_zero_point) * x_scale."),
    op("DynamicQuantizeLinear", "x", "y y_scale y_zero_point", infer=_infer_dynamic_quantize,
       doc="uint8 quantization with scale and zero point computed from x's range."),
    op("QLinearConv",
       "x x_scale x_zero_point w w_scale w_zero_point y_scale y_zero_point B?", "y",
       attrs=CONV_ATTRS, traits={LS}, infer=_infer_qlinear_conv,
       doc="Integer conv of zero-point-shifted x and w (+ int32 B), requantized."),
    op("QLinearMatMul",
       "a a_scale a_zero_point b b_scale b_zero_point y_scale y_zero_point", "y",
       infer=_infer_qlinear_matmul, doc="Integer matmul of shifted a and b, requantized."),
    op("ConvInteger", "x w x_zero_point? w_zero_point?", "y", attrs=CONV_ATTRS,
       traits={LS}, infer=_infer_conv_integer,
       doc="int32 conv of (x - x_zero_point) by (w - w_zero_point)."),
    op("MatMulInteger", "A B a_zero_point? b_zero_point?", "Y", infer=_infer_matmul_integer,
       doc="int32 matmul of (A - a_zero_point) by (B - b_zero_point); a 1-D a_zero_point "
           "is per row of A, a 1-D b_zero_point per column of B."),
)
