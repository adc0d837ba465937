"""Ops of onnxruntime's ``com.microsoft`` domain that fused and quantized ONNX models carry.

Semantics: onnxruntime's docs/ContribOperators.md (the CPU kernels where the text is
silent). Contrib ops that equal default-domain ops (Gelu, FastGelu, BiasGelu, QuickGelu,
BiasAdd, FusedGemm, QuantizeLinear, DequantizeLinear, QLinearConv) are lowered to those by
the ONNX parser and are not declared here.

* FusedMatMul: ``alpha * matmul(A', B')``; ``transBatchA`` first moves A's dim 0 to
  position rank-2 (``[M, B1.., K] -> [B1.., M, K]``), ``transA`` then swaps the last two.
* FusedConv: ``activation(Conv(X, W, B) + Z)``; activation one of Relu, Tanh, Sigmoid,
  LeakyRelu (alpha), Clip (min, max), HardSigmoid (alpha, beta) with its
  ``activation_params``.
* SkipLayerNormalization: ``s = input + skip (+ bias)``; ``output = LayerNorm(s) * gamma
  (+ beta)`` over the last axis; optional outputs mean, inv_std_var (shape ``[..., 1]``)
  and ``input_skip_bias_sum = s``. The Simplified variants are RMSNorm:
  ``s / sqrt(mean(s**2) + epsilon) * gamma``. SimplifiedLayerNormalization is
  registered by onnxruntime in the default domain (``axis``, ``stash_type`` like
  LayerNormalization), so it is declared with domain ai.onnx.
* BiasSoftmax: ``softmax(data + bias, axis)``; bias dims are data's dims without
  ``[broadcast_axis, axis)`` (``is_inner_broadcast``) or a suffix of data's dims.
* DynamicQuantizeMatMul: A quantized to uint8 as DynamicQuantizeLinear does, then
  ``(Aq - a_zp) @ (B - b_zp) * (a_scale * b_scale) + bias``; MatMulIntegerToFloat: the
  same with given ``a_scale`` / ``a_zero_point``. Scales of B may be per column.
* QLinearAdd / QLinearMul: ``C = quantize(dequantize(A) op dequantize(B))`` with numpy
  broadcasting; QLinearSigmoid / QLinearLeakyRelu: ``quantize(f(dequantize(X)))``;
  QLinearGlobalAveragePool: mean over spatial dims (``format`` as GlobalAveragePool);
  QLinearConcat: each input requantized to ``Y_scale`` / ``Y_zero_point`` then
  concatenated (inputs: Y_scale, Y_zero_point, then (tensor, scale, zero point) triples).
* QGemm: ``alpha * (A' - a_zp) @ (B' - b_zp) * a_scale * b_scale`` with the int32 C added
  to the accumulator; quantized with ``y_scale`` / ``y_zero_point`` when present, float32
  otherwise.
* DynamicQuantizeLSTM: LSTM whose W ``[dirs, input, 4H]`` and R ``[dirs, H, 4H]`` are
  int8/uint8 with per-direction or per-(direction, gate column) scales and zero points.
* Attention (IR name MsAttention; ai.onnx has an Attention of its own): BERT/GPT-2
  style self attention with packed QKV weights ``[hidden, 3 * H]``;
  MultiHeadAttention (IR name MsMultiHeadAttention): separate Q, K, V
  (already projected, optional packed bias).
* MatMulNBits: ``A @ dequantize(B).T (+ bias)`` with B bit-packed ``[N, k_blocks,
  blob_size]`` along K, per-block scales and zero points (default ``2**(bits-1)``).
"""

from __future__ import annotations

from ir.core import Node, Shape
from ir.dtypes import DataType
from ir.ops.base import FLOAT, FLOATS, INT, INTS, REQUIRED, STRING, STRINGS, Trait, op
from ir.ops.infer import broadcast_shapes, in_dtype, in_shape, normalize_axis, same_as_input
from ir.ops.nn import CONV_ATTRS, conv_shape, matmul_shape

__all__ = ["OPS"]

Result = list[tuple[DataType, Shape | None]]
MS = "com.microsoft"
LS = Trait.LAYOUT_SENSITIVE


def _infer_fused_matmul(node: Node) -> Result:
    a, b = in_shape(node), in_shape(node, 1)
    a = _fused_operand(a, node.attr("transBatchA"), node.attr("transA"))
    b = _fused_operand(b, node.attr("transBatchB"), node.attr("transB"))
    return [(in_dtype(node), matmul_shape(a, b))]


def _fused_operand(shape: Shape | None, trans_batch: int, trans: int) -> Shape | None:
    if shape is None or len(shape) < 2:
        return shape
    s = list(shape)
    if trans_batch and len(s) > 2:
        s = s[1:-1] + [s[0], s[-1]]
    if trans:
        s[-2], s[-1] = s[-1], s[-2]
    return tuple(s)


def _infer_fused_conv(node: Node) -> Result:
    return [(in_dtype(node), conv_shape(node, 0, 1))]


def _infer_skip_norm(node: Node) -> Result:
    xs = in_shape(node)
    stats = None if xs is None else (*xs[:-1], 1)
    out = [(in_dtype(node), xs), (DataType.FLOAT, stats), (DataType.FLOAT, stats),
           (in_dtype(node), xs)]
    return out[: len(node.outputs)]


def _infer_simplified_norm(node: Node) -> Result:
    xs = in_shape(node)
    stats: Shape | None = None
    if xs is not None:
        axis = normalize_axis(node.attr("axis"), len(xs))
        stats = tuple(xs[:axis]) + (1,) * (len(xs) - axis)
    stash = DataType.FLOAT if node.attr("stash_type") == 1 else in_dtype(node)
    return [(in_dtype(node), xs), (stash, stats)][: len(node.outputs)]


def _infer_float_matmul(node: Node) -> Result:
    return [(DataType.FLOAT, matmul_shape(in_shape(node), in_shape(node, 1)))]


def _infer_int_to_float(node: Node) -> Result:
    scale = node.input(2)
    dtype = scale.dtype if scale is not None else DataType.FLOAT
    return [(dtype, matmul_shape(in_shape(node), in_shape(node, 1)))]


def _infer_qlinear_binary(node: Node) -> Result:
    return [(in_dtype(node), broadcast_shapes(in_shape(node), in_shape(node, 3)))]


def _infer_qlinear_gap(node: Node) -> Result:
    xs = in_shape(node)
    if xs is None:
        return [(in_dtype(node), None)]
    if node.attr("format") == "NHWC":
        return [(in_dtype(node), (xs[0], *([1] * (len(xs) - 2)), xs[-1]))]
    return [(in_dtype(node), (xs[0], xs[1], *([1] * (len(xs) - 2))))]


def _infer_qlinear_concat(node: Node) -> Result:
    shapes = [v.shape if v is not None else None for v in node.inputs[2::3]]
    dtype = in_dtype(node, 2)
    if not shapes or any(s is None for s in shapes):
        return [(dtype, None)]
    first = shapes[0]
    assert first is not None
    axis = normalize_axis(node.attr("axis"), len(first))
    sizes = [s[axis] for s in shapes]  # type: ignore[index]
    total = sum(sizes) if all(isinstance(d, int) for d in sizes) else None  # type: ignore[arg-type]
    return [(dtype, (*first[:axis], total, *first[axis + 1:]))]


def _infer_qgemm(node: Node) -> Result:
    a, b = in_shape(node), in_shape(node, 3)
    m = None if a is None else a[1 if node.attr("transA") else 0]
    n = None if b is None else b[0 if node.attr("transB") else 1]
    yz = node.input(8)
    return [(yz.dtype if yz is not None else DataType.FLOAT, (m, n))]


def _infer_dq_lstm(node: Node) -> Result:
    xs, rs = in_shape(node), in_shape(node, 2)
    dirs = 2 if node.attr("direction") == "bidirectional" else 1
    hidden = node.attr("hidden_size")
    if hidden is None and rs is not None:
        hidden = rs[1]
    seq, batch = (None, None) if xs is None else (xs[0], xs[1])
    shapes = [(seq, dirs, batch, hidden), (dirs, batch, hidden), (dirs, batch, hidden)]
    return [(DataType.FLOAT, shapes[i]) for i in range(len(node.outputs))]


def _infer_attention(node: Node) -> Result:
    xs, ws = in_shape(node), in_shape(node, 1)
    sizes = node.attr("qkv_hidden_sizes")
    v_hidden = sizes[2] if sizes else (ws[1] // 3 if ws is not None and
                                       isinstance(ws[1], int) else None)
    out: Result = [(in_dtype(node), None if xs is None else (xs[0], xs[1], v_hidden))]
    if len(node.outputs) > 1:
        out.append((in_dtype(node), None))
    return out


def _infer_mha(node: Node) -> Result:
    qs, vs = in_shape(node), in_shape(node, 2)
    v_hidden = None
    if vs is not None and len(vs) == 3:
        v_hidden = vs[2]
    elif qs is not None and len(qs) == 3 and vs is None:
        v_hidden = qs[2]
    out: Result = [(in_dtype(node), None if qs is None else (qs[0], qs[1], v_hidden))]
    out += [(in_dtype(node), None)] * (len(node.outputs) - 1)
    return out


def _infer_nbits(node: Node) -> Result:
    a = in_shape(node)
    return [(in_dtype(node), None if a is None else (*a[:-1], node.attr("N")))]


_QLINEAR_BINARY = "A A_scale A_zero_point? B B_scale B_zero_point? C_scale C_zero_point?"
_QLINEAR_UNARY = "X X_scale X_zero_point? Y_scale Y_zero_point?"

OPS = (
    op("FusedMatMul", "A B", "Y",
       attrs={"alpha": FLOAT(1.0), "transA": INT(0), "transB": INT(0),
              "transBatchA": INT(0), "transBatchB": INT(0)},
       infer=_infer_fused_matmul, domain=MS, doc="alpha * matmul(A', B')."),
    op("FusedConv", "X W B? Z?", "Y",
       attrs={**CONV_ATTRS, "activation": STRING(None), "activation_params": FLOATS(None)},
       traits={LS}, infer=_infer_fused_conv, domain=MS,
       doc="activation(Conv(X, W, B) + Z)."),
    op("SkipLayerNormalization", "input skip gamma beta? bias?",
       "output mean? inv_std_var? input_skip_bias_sum?", attrs={"epsilon": FLOAT(1e-12)},
       infer=_infer_skip_norm, domain=MS,
       doc="LayerNorm(input + skip + bias) over the last axis."),
    op("SkipSimplifiedLayerNormalization", "input skip gamma bias?",
       "output mean? inv_std_var? input_skip_bias_sum?", attrs={"epsilon": FLOAT(1e-12)},
       infer=_infer_skip_norm, domain=MS,
       doc="RMSNorm(input + skip + bias) over the last axis."),
    op("SimplifiedLayerNormalization", "X scale", "Y inv_std_var?",
       attrs={"axis": INT(-1), "epsilon": FLOAT(1e-5), "stash_type": INT(1)},
       infer=_infer_simplified_norm,
       doc="RMSNorm over [axis, rank): X / sqrt(mean(X**2) + epsilon) * scale "
           "(onnxruntime's default-domain op)."),
    op("BiasSoftmax", "data bias", "output",
       attrs={"axis": INT(1), "is_inner_broadcast": INT(REQUIRED)}, infer=same_as_input,
       domain=MS, doc="softmax(data + bias) along axis and the dims after it."),
    op("DynamicQuantizeMatMul", "A B b_scale b_zero_point? bias?", "Y",
       infer=_infer_float_matmul, domain=MS,
       doc="uint8 dynamic quantization of A, integer matmul by B, scaled to float."),
    op("MatMulIntegerToFloat", "A B a_scale b_scale a_zero_point? b_zero_point? bias?", "Y",
       infer=_infer_int_to_float, domain=MS,
       doc="(A - a_zp) @ (B - b_zp) * a_scale * b_scale + bias."),
    op("QLinearAdd", _QLINEAR_BINARY, "C", infer=_infer_qlinear_binary, domain=MS,
       doc="quantize(dequantize(A) + dequantize(B))."),
    op("QLinearMul", _QLINEAR_BINARY, "C", infer=_infer_qlinear_binary, domain=MS,
       doc="quantize(dequantize(A) * dequantize(B))."),
    op("QLinearSigmoid", _QLINEAR_UNARY, "Y", infer=same_as_input, domain=MS,
       doc="quantize(sigmoid(dequantize(X)))."),
    op("QLinearLeakyRelu", _QLINEAR_UNARY, "Y", attrs={"alpha": FLOAT(0.01)},
       infer=same_as_input, domain=MS, doc="quantize(leaky_relu(dequantize(X), alpha))."),
    op("QLinearGlobalAveragePool", "X x_scale x_zero_point y_scale y_zero_point", "Y",
       attrs={"format": STRING("NCHW")}, traits={LS}, infer=_infer_qlinear_gap, domain=MS,
       doc="Quantized mean over the spatial dims."),
    op("QLinearConcat", "Y_scale Y_zero_point inputs*", "Y", attrs={"axis": INT(REQUIRED)},
       infer=_infer_qlinear_concat, domain=MS,
       doc="Concat of (tensor, scale, zero point) triples requantized to Y's parameters."),
    op("QGemm",
       "A a_scale a_zero_point B b_scale b_zero_point C? y_scale? y_zero_point?", "Y",
       attrs={"alpha": FLOAT(1.0), "transA": INT(0), "transB": INT(0)},
       infer=_infer_qgemm, domain=MS,
       doc="Quantized Gemm; float32 output unless y_scale / y_zero_point are given."),
    op("DynamicQuantizeLSTM",
       "X W R B? sequence_lens? initial_h? initial_c? P? W_scale W_zero_point R_scale "
       "R_zero_point",
       "Y? Y_h? Y_c?",
       attrs={"activation_alpha": FLOATS(None), "activation_beta": FLOATS(None),
              "activations": STRINGS(None), "clip": FLOAT(None),
              "direction": STRING("forward"), "hidden_size": INT(None),
              "input_forget": INT(0)},
       infer=_infer_dq_lstm, domain=MS,
       doc="LSTM with int8/uint8 W [dirs, input, 4H] and R [dirs, H, 4H]."),
    op("MsAttention", "input weights bias? mask_index? past? attention_bias? "
       "past_sequence_length?", "output present?",
       attrs={"num_heads": INT(REQUIRED), "qkv_hidden_sizes": INTS(None),
              "unidirectional": INT(0), "scale": FLOAT(None),
              "mask_filter_value": FLOAT(-10000.0), "do_rotary": INT(0),
              "past_present_share_buffer": INT(0), "rotary_embedding_dim": INT(0)},
       infer=_infer_attention, domain=MS,
       doc="Self attention with packed QKV projection weights."),
    op("MsMultiHeadAttention", "query key? value? bias? key_padding_mask? attention_bias? "
       "past_key? past_value? past_sequence_length? cache_indirection?",
       "output present_key? present_value? qk?",
       attrs={"num_heads": INT(REQUIRED), "unidirectional": INT(0), "scale": FLOAT(None),
              "mask_filter_value": FLOAT(-10000.0)},
       infer=_infer_mha, domain=MS, doc="Multi-head attention of projected Q, K, V."),
    op("MatMulNBits", "A B scales zero_points? g_idx? bias?", "Y",
       attrs={"K": INT(REQUIRED), "N": INT(REQUIRED), "bits": INT(4),
              "block_size": INT(REQUIRED), "accuracy_level": INT(0),
              "weight_prepacked": INT(0)},
       infer=_infer_nbits, domain=MS,
       doc="A @ dequantize(B).T with block-wise N-bit packed weights."),
)
