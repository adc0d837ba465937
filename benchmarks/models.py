"""Real architectures built with onnx.helper, random weights from a fixed seed.

Used by tests (small sizes), benchmarks (full sizes) and ``make demo``. Each
builder returns an ``onnx.ModelProto`` shaped like what exporters emit:
PyTorch-style BERT with Shape->Gather->Concat->Reshape head splitting and
Erf-GELU, a ResNet with BN after each conv, a MobileNetV2 with depthwise
convs and Clip(0, 6), an LSTM tagger, and If/Loop control flow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "BertConfig",
    "bert_encoder",
    "control_flow_model",
    "lstm_tagger",
    "mobilenet_v2",
    "resnet",
]

OPSET = 17


class _Builder:
    """Accumulates nodes and initializers with unique names."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, base: str) -> str:
        self._n += 1
        return f"{base}_{self._n}"

    def const(self, base: str, array: np.ndarray) -> str:
        n = self.name(base)
        self.inits.append(numpy_helper.from_array(np.array(array, order="C"), n))
        return n

    def weight(self, base: str, shape: tuple[int, ...], scale: float | None = None) -> str:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        s = scale if scale is not None else 1.0 / np.sqrt(max(fan_in, 1))
        return self.const(base, (self.rng.standard_normal(shape) * s).astype(np.float32))

    def node(self, op: str, inputs: list[str], n_out: int = 1, **attrs) -> list[str]:
        outs = [self.name(op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=self.name(op), **attrs))
        return outs

    def one(self, op: str, inputs: list[str], **attrs) -> str:
        return self.node(op, inputs, 1, **attrs)[0]

    def model(self, name, inputs, outputs, opset: int = OPSET) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        m.ir_version = 8
        m.producer_name = "liteconv-benchmarks"
        return m


# -- CNNs -------------------------------------------------------------------------------
def _conv_bn(b: _Builder, x: str, cin: int, cout: int, k: int, stride: int, group: int = 1):
    w = b.weight("w", (cout, cin // group, k, k))
    y = b.one("Conv", [x, w], kernel_shape=[k, k], strides=[stride, stride],
              pads=[k // 2] * 4, group=group)  # fmt: skip
    scale = b.const("bn_s", (1.0 + 0.1 * b.rng.standard_normal(cout)).astype(np.float32))
    bias = b.const("bn_b", (0.1 * b.rng.standard_normal(cout)).astype(np.float32))
    mean = b.const("bn_m", (0.1 * b.rng.standard_normal(cout)).astype(np.float32))
    var = b.const("bn_v", (1.0 + 0.1 * b.rng.random(cout)).astype(np.float32))
    return b.one("BatchNormalization", [y, scale, bias, mean, var], epsilon=1e-5)


def resnet(
    depth: int = 50, width: int = 64, image: int = 224, classes: int = 1000, seed: int = 0
) -> onnx.ModelProto:
    """ResNet-50 (bottleneck) or a reduced-depth variant; input 'input' [N,3,H,W]."""
    blocks = {50: [3, 4, 6, 3], 26: [2, 2, 2, 2], 14: [1, 1, 1, 1]}[depth]
    b = _Builder(seed)
    x = b.one("Relu", [_conv_bn(b, "input", 3, width, 7, 2)])
    x = b.one("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = width
    for stage, n in enumerate(blocks):
        mid = width * 2**stage
        cout = mid * 4
        for i in range(n):
            stride = 2 if i == 0 and stage > 0 else 1
            y = b.one("Relu", [_conv_bn(b, x, cin, mid, 1, 1)])
            y = b.one("Relu", [_conv_bn(b, y, mid, mid, 3, stride)])
            y = _conv_bn(b, y, mid, cout, 1, 1)
            sc = _conv_bn(b, x, cin, cout, 1, stride) if (stride != 1 or cin != cout) else x
            x = b.one("Relu", [b.one("Add", [y, sc])])
            cin = cout
    x = b.one("GlobalAveragePool", [x])
    x = b.one("Flatten", [x], axis=1)
    w = b.weight("fc_w", (classes, cin))
    bias = b.const("fc_b", np.zeros(classes, np.float32))
    b.one("Gemm", [x, w, bias], transB=1)
    b.nodes[-1].output[0] = "logits"
    return b.model(
        f"resnet{depth}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, image, image])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
    )


def mobilenet_v2(
    width_mult: float = 1.0, image: int = 224, classes: int = 1000, seed: int = 0,
    stages: int = 7,
) -> onnx.ModelProto:  # fmt: skip
    """MobileNetV2: inverted residuals, depthwise 3x3, Clip(0, 6) activations."""
    setting = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
               (6, 160, 3, 2), (6, 320, 1, 1)][:stages]  # fmt: skip
    b = _Builder(seed)
    lo = b.const("clip_lo", np.array(0.0, np.float32))
    hi = b.const("clip_hi", np.array(6.0, np.float32))

    def relu6(t: str) -> str:
        return b.one("Clip", [t, lo, hi])

    def ch(c: int) -> int:
        return max(8, int(c * width_mult + 4) // 8 * 8)

    cin = ch(32)
    x = relu6(_conv_bn(b, "input", 3, cin, 3, 2))
    for t, c, n, s in setting:
        cout = ch(c)
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = cin * t
            y = relu6(_conv_bn(b, x, cin, hidden, 1, 1)) if t != 1 else x
            y = relu6(_conv_bn(b, y, hidden, hidden, 3, stride, group=hidden))
            y = _conv_bn(b, y, hidden, cout, 1, 1)
            x = b.one("Add", [x, y]) if stride == 1 and cin == cout else y
            cin = cout
    last = ch(1280) if width_mult > 1.0 else 1280
    x = relu6(_conv_bn(b, x, cin, last, 1, 1))
    x = b.one("GlobalAveragePool", [x])
    x = b.one("Flatten", [x], axis=1)
    w = b.weight("fc_w", (classes, last))
    bias = b.const("fc_b", np.zeros(classes, np.float32))
    b.one("Gemm", [x, w, bias], transB=1)
    b.nodes[-1].output[0] = "logits"
    return b.model(
        "mobilenet_v2",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, image, image])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
    )


# -- BERT ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BertConfig:
    vocab: int = 30522
    hidden: int = 768
    layers: int = 12
    heads: int = 12
    intermediate: int = 3072
    max_positions: int = 512

    @classmethod
    def tiny(cls) -> BertConfig:
        return cls(vocab=100, hidden=32, layers=2, heads=4, intermediate=64, max_positions=64)


def _layer_norm_decomposed(b: _Builder, x: str, hidden: int) -> str:
    """ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add, as older exporters write it."""
    mean = b.one("ReduceMean", [x], axes=[-1], keepdims=1)
    d = b.one("Sub", [x, mean])
    var = b.one("ReduceMean", [b.one("Pow", [d, b.const("two", np.array(2.0, np.float32))])],
                axes=[-1], keepdims=1)  # fmt: skip
    std = b.one("Sqrt", [b.one("Add", [var, b.const("eps", np.array(1e-12, np.float32))])])
    y = b.one("Div", [d, std])
    gamma = b.const("ln_g", (1 + 0.1 * b.rng.standard_normal(hidden)).astype(np.float32))
    beta = b.const("ln_b", (0.1 * b.rng.standard_normal(hidden)).astype(np.float32))
    return b.one("Add", [b.one("Mul", [y, gamma]), beta])


def _linear(b: _Builder, x: str, cin: int, cout: int) -> str:
    w = b.weight("w", (cin, cout), scale=0.02)
    bias = b.const("b", (0.02 * b.rng.standard_normal(cout)).astype(np.float32))
    return b.one("Add", [b.one("MatMul", [x, w]), bias])


def _gelu_erf(b: _Builder, x: str) -> str:
    s = b.one("Div", [x, b.const("sqrt2", np.array(np.sqrt(2.0), np.float32))])
    e = b.one("Add", [b.one("Erf", [s]), b.const("one", np.array(1.0, np.float32))])
    return b.one("Mul", [b.one("Mul", [x, e]), b.const("half", np.array(0.5, np.float32))])


def _split_heads(b: _Builder, x: str, heads: int, head_dim: int) -> str:
    """[B,S,H] -> [B,heads,S,hd] via the Shape->Gather->Unsqueeze->Concat->Reshape chain."""
    shape = b.one("Shape", [x])
    batch = b.one("Gather", [shape, b.const("i0", np.array(0, np.int64))], axis=0)
    seq = b.one("Gather", [shape, b.const("i1", np.array(1, np.int64))], axis=0)
    ax0 = b.const("ax0", np.array([0], np.int64))
    dims = b.one("Concat", [
        b.one("Unsqueeze", [batch, ax0]), b.one("Unsqueeze", [seq, ax0]),
        b.const("nh", np.array([heads], np.int64)), b.const("hd", np.array([head_dim], np.int64)),
    ], axis=0)  # fmt: skip
    return b.one("Transpose", [b.one("Reshape", [x, dims])], perm=[0, 2, 1, 3])


def bert_encoder(
    cfg: BertConfig | None = None, seed: int = 0, decomposed_layernorm: bool = True
) -> onnx.ModelProto:
    """BERT encoder: inputs input_ids [B,S] int64 and attention_mask [B,S] int64."""
    cfg = cfg or BertConfig()
    b = _Builder(seed)
    hd = cfg.hidden // cfg.heads
    word = b.weight("word_emb", (cfg.vocab, cfg.hidden), scale=0.02)
    pos = b.weight("pos_emb", (cfg.max_positions, cfg.hidden), scale=0.02)
    x = b.one("Gather", [word, "input_ids"], axis=0)
    seq = b.one("Gather", [b.one("Shape", [
        "input_ids"]), b.const("i1", np.array(1, np.int64))], axis=0)  # fmt: skip
    pos_ids = b.one("Range", [b.const("r0", np.array(0, np.int64)), seq,
                              b.const("r1", np.array(1, np.int64))])  # fmt: skip
    x = b.one("Add", [x, b.one("Gather", [pos, pos_ids], axis=0)])

    def layer_norm(t: str) -> str:
        if decomposed_layernorm:
            return _layer_norm_decomposed(b, t, cfg.hidden)
        g = b.const("ln_g", np.ones(cfg.hidden, np.float32))
        be = b.const("ln_b", np.zeros(cfg.hidden, np.float32))
        return b.one("LayerNormalization", [t, g, be], axis=-1, epsilon=1e-12)

    x = layer_norm(x)
    # mask [B,S] -> [B,1,1,S] additive
    m = b.one("Cast", [b.one("Unsqueeze", ["attention_mask", b.const(
        "ax12", np.array([1, 2], np.int64))])], to=TensorProto.FLOAT)  # fmt: skip
    m = b.one("Mul", [b.one("Sub", [b.const("one", np.array(1.0, np.float32)), m]),
                      b.const("neg", np.array(-10000.0, np.float32))])  # fmt: skip
    scale = b.const("scale", np.array(np.sqrt(hd), np.float32))
    for _ in range(cfg.layers):
        q = _split_heads(b, _linear(b, x, cfg.hidden, cfg.hidden), cfg.heads, hd)
        k = _split_heads(b, _linear(b, x, cfg.hidden, cfg.hidden), cfg.heads, hd)
        v = _split_heads(b, _linear(b, x, cfg.hidden, cfg.hidden), cfg.heads, hd)
        kt = b.one("Transpose", [k], perm=[0, 1, 3, 2])
        scores = b.one("Add", [b.one("Div", [b.one("MatMul", [q, kt]), scale]), m])
        probs = b.one("Softmax", [scores], axis=-1)
        ctx = b.one("Transpose", [b.one("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        shape = b.one("Shape", [x])
        ctx = b.one("Reshape", [ctx, shape])
        attn = _linear(b, ctx, cfg.hidden, cfg.hidden)
        x = layer_norm(b.one("Add", [x, attn]))
        h = _gelu_erf(b, _linear(b, x, cfg.hidden, cfg.intermediate))
        x = layer_norm(b.one("Add", [x, _linear(b, h, cfg.intermediate, cfg.hidden)]))
    b.one("Identity", [x])
    b.nodes[-1].output[0] = "last_hidden_state"
    return b.model(
        "bert_encoder",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                       ["batch", "seq", cfg.hidden])],  # fmt: skip
    )


# -- LSTM ----------------------------------------------------------------------------------
def lstm_tagger(
    vocab: int = 50, emb: int = 16, hidden: int = 24, tags: int = 5, seed: int = 0
) -> onnx.ModelProto:
    """Embedding -> bidirectional LSTM -> linear; input tokens [S, B] int64."""
    b = _Builder(seed)
    table = b.weight("emb", (vocab, emb), scale=0.5)
    x = b.one("Gather", [table, "tokens"], axis=0)  # [S,B,E]
    w = b.weight("lstm_w", (2, 4 * hidden, emb))
    r = b.weight("lstm_r", (2, 4 * hidden, hidden))
    bias = b.const("lstm_b", (0.1 * b.rng.standard_normal((2, 8 * hidden))).astype(np.float32))
    y, _h, _c = b.node("LSTM", [x, w, r, bias], 3, hidden_size=hidden, direction="bidirectional")
    y = b.one("Transpose", [y], perm=[0, 2, 1, 3])  # [S,B,2,H]
    y = b.one("Reshape", [y, b.const("shp", np.array([0, 0, 2 * hidden], np.int64))])
    w2 = b.weight("out_w", (2 * hidden, tags))
    out = b.one("Add", [b.one("MatMul", [y, w2]), b.const("out_b", np.zeros(tags, np.float32))])
    b.one("Softmax", [out], axis=-1)
    b.nodes[-1].output[0] = "tag_probs"
    return b.model(
        "lstm_tagger",
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["seq", "batch"])],
        [helper.make_tensor_value_info("tag_probs", TensorProto.FLOAT, ["seq", "batch", tags])],
    )


# -- control flow --------------------------------------------------------------------------------
def control_flow_model(seed: int = 0) -> onnx.ModelProto:
    """A Loop accumulating a recurrence over a trip count input, then an If on its sum.

    Inputs: x [4] float, trip [] int64. The Loop body reads the outer weight W
    (outer scope) and emits a scan output; the If picks Relu or Neg by sign.
    """
    rng = np.random.default_rng(seed)
    weight = numpy_helper.from_array((rng.standard_normal((4, 4)) * 0.5).astype(np.float32), "W")
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["h_in", "W"], ["mm"]),
            helper.make_node("Tanh", ["mm"], ["h_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("ReduceSum", ["h_out"], ["scan_out"], keepdims=0),
        ],
        "loop_body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h_in", TensorProto.FLOAT, [4]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [4]),
            helper.make_tensor_value_info("scan_out", TensorProto.FLOAT, []),
        ],
    )
    then_g = helper.make_graph(
        [helper.make_node("Relu", ["h_final"], ["branch_out"])], "then", [],
        [helper.make_tensor_value_info("branch_out", TensorProto.FLOAT, [4])],
    )  # fmt: skip
    else_g = helper.make_graph(
        [helper.make_node("Neg", ["h_final"], ["branch_out2"])], "else", [],
        [helper.make_tensor_value_info("branch_out2", TensorProto.FLOAT, [4])],
    )  # fmt: skip
    nodes = [
        helper.make_node("Constant", [], ["cond0"], value=helper.make_tensor(
            "c", TensorProto.BOOL, [], [True])),  # fmt: skip
        helper.make_node("Loop", ["trip", "cond0", "x"], ["h_final", "trace"], body=body),
        helper.make_node("ReduceSum", ["h_final"], ["total"], keepdims=0),
        helper.make_node("Constant", [], ["zero"], value_float=0.0),
        helper.make_node("Greater", ["total", "zero"], ["positive"]),
        helper.make_node("If", ["positive"], ["y"], then_branch=then_g, else_branch=else_g),
    ]
    graph = helper.make_graph(
        nodes,
        "control_flow",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [4]),
            helper.make_tensor_value_info("trip", TensorProto.INT64, []),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [4]),
            helper.make_tensor_value_info("trace", TensorProto.FLOAT, [None]),
        ],
        [weight],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m
