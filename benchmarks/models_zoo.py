"""More real architectures for the optimizer benchmarks, built like benchmarks.models.

Each builder returns an ``onnx.ModelProto`` shaped like what PyTorch exports
(random weights from a fixed seed, BatchNormalization after each conv):

- :func:`yolo_fpn`: a YOLO-style detector: strided conv backbone with SiLU
  (``x * Sigmoid(x)``), a top-down FPN (1x1 conv, ``Resize`` nearest x2,
  ``Concat`` with the lateral feature, 3x3 conv) and three heads (1x1 conv,
  ``Reshape`` to ``[N, anchors, 5 + classes, H, W]``, ``Transpose``);
- :func:`ocr_recognizer`: a text recognizer: CNN backbone collapsing the
  height, reshape to a sequence, two transformer encoder layers
  (decomposed LayerNorm, Erf GELU, PyTorch-style head splitting) and a linear
  layer to the classes with ``LogSoftmax``;
- :func:`efficientnet`: EfficientNet-B0-style MBConv blocks with Swish and
  squeeze-excitation (``GlobalAveragePool`` -> 1x1 conv -> Swish -> 1x1 conv ->
  ``Sigmoid`` -> ``Mul``);
- :func:`unet`: a UNet segmenter: double conv blocks, MaxPool down,
  ``ConvTranspose`` 2x2 up, ``Concat`` skips, 1x1 conv to the classes.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from benchmarks.models import _Builder, _conv_bn, _gelu_erf, _layer_norm_decomposed, _linear

__all__ = ["efficientnet", "ocr_recognizer", "unet", "yolo_fpn"]


def _silu(b: _Builder, x: str) -> str:
    return b.one("Mul", [x, b.one("Sigmoid", [x])])


def _conv(b: _Builder, x: str, cin: int, cout: int, k: int = 1, stride: int = 1) -> str:
    """A conv with bias (no BN), as heads and SE blocks have."""
    w = b.weight("w", (cout, cin, k, k))
    bias = b.const("b", (0.1 * b.rng.standard_normal(cout)).astype(np.float32))
    return b.one("Conv", [x, w, bias], kernel_shape=[k, k], strides=[stride, stride],
                 pads=[k // 2] * 4)  # fmt: skip


def _image_input(name: str, channels: int, h: int, w: int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", channels, h, w])


# -- YOLO-style detector ------------------------------------------------------------------------
def yolo_fpn(
    image: int = 320, width: int = 32, classes: int = 80, anchors: int = 3, seed: int = 0
) -> onnx.ModelProto:
    """Backbone to strides 8/16/32, top-down FPN, three detection heads; input 'images'."""
    b = _Builder(seed)

    def cbs(x: str, cin: int, cout: int, k: int = 3, stride: int = 1) -> str:
        return _silu(b, _conv_bn(b, x, cin, cout, k, stride))

    x = cbs("images", 3, width, 3, 2)  # /2
    chans = [width]
    feats: list[str] = []
    for level in range(4):  # /4 /8 /16 /32
        cin, cout = chans[-1], width * 2 ** (level + 1)
        x = cbs(x, cin, cout, 3, 2)
        x = cbs(cbs(x, cout, cout // 2, 1), cout // 2, cout, 3)
        chans.append(cout)
        if level >= 1:
            feats.append(x)
    c3, c4, c5 = feats
    n3, n4, n5 = chans[2], chans[3], chans[4]
    scales = b.const("up_scales", np.array([1, 1, 2, 2], np.float32))

    def up(t: str) -> str:
        return b.one("Resize", [t, "", scales], mode="nearest",
                     coordinate_transformation_mode="asymmetric", nearest_mode="floor")  # fmt: skip

    p5 = cbs(c5, n5, n4, 1)
    p4 = cbs(b.one("Concat", [up(p5), c4], axis=1), 2 * n4, n4, 3)
    t4 = cbs(p4, n4, n3, 1)
    p3 = cbs(b.one("Concat", [up(t4), c3], axis=1), 2 * n3, n3, 3)
    outputs = []
    no = 5 + classes
    for i, (p, c, stride) in enumerate(((p3, n3, 8), (p4, n4, 16), (p5, n4, 32))):
        side = image // stride
        y = _conv(b, p, c, anchors * no, 1)
        shape = b.const("head_shape", np.array([0, anchors, no, side, side], np.int64))
        y = b.one("Transpose", [b.one("Reshape", [y, shape])], perm=[0, 1, 3, 4, 2])
        b.nodes[-1].output[0] = f"head{i}"
        outputs.append(helper.make_tensor_value_info(
            f"head{i}", TensorProto.FLOAT, ["N", anchors, side, side, no]))  # fmt: skip
    return b.model("yolo_fpn", [_image_input("images", 3, image, image)], outputs)


# -- OCR recognizer -------------------------------------------------------------------------------
def _encoder_layer(b: _Builder, x: str, hidden: int, heads: int, ffn: int) -> str:
    """Post-norm transformer encoder layer on [N, T, hidden] (no mask)."""
    from benchmarks.models import _split_heads

    hd = hidden // heads
    q, k, v = (_split_heads(b, _linear(b, x, hidden, hidden), heads, hd) for _ in range(3))
    kt = b.one("Transpose", [k], perm=[0, 1, 3, 2])
    scale = b.const("scale", np.array(np.sqrt(hd), np.float32))
    probs = b.one("Softmax", [b.one("Div", [b.one("MatMul", [q, kt]), scale])], axis=-1)
    ctx = b.one("Transpose", [b.one("MatMul", [probs, v])], perm=[0, 2, 1, 3])
    ctx = b.one("Reshape", [ctx, b.one("Shape", [x])])
    x = _layer_norm_decomposed(b, b.one("Add", [x, _linear(b, ctx, hidden, hidden)]), hidden)
    h = _gelu_erf(b, _linear(b, x, hidden, ffn))
    return _layer_norm_decomposed(b, b.one("Add", [x, _linear(b, h, ffn, hidden)]), hidden)


def ocr_recognizer(
    height: int = 32, width: int = 128, hidden: int = 128, heads: int = 4, layers: int = 2,
    classes: int = 97, seed: int = 0,
) -> onnx.ModelProto:  # fmt: skip
    """CNN (height 32 -> 1, width /4) -> sequence [N, T, hidden] -> encoders -> classes."""
    b = _Builder(seed)

    def cbr(x: str, cin: int, cout: int) -> str:
        return b.one("Relu", [_conv_bn(b, x, cin, cout, 3, 1)])

    def pool(x: str, kh: int, kw: int) -> str:
        return b.one("MaxPool", [x], kernel_shape=[kh, kw], strides=[kh, kw])

    x = pool(cbr("image", 1, 32), 2, 2)  # 16 x W/2
    x = pool(cbr(x, 32, 64), 2, 2)  # 8 x W/4
    x = pool(cbr(cbr(x, 64, hidden), hidden, hidden), 2, 1)  # 4
    x = pool(cbr(cbr(x, hidden, hidden), hidden, hidden), 2, 1)  # 2
    x = b.one("ReduceMean", [x], axes=[2], keepdims=0)  # [N, C, T]
    x = b.one("Transpose", [x], perm=[0, 2, 1])  # [N, T, C]
    for _ in range(layers):
        x = _encoder_layer(b, x, hidden, heads, 2 * hidden)
    logits = _linear(b, x, hidden, classes)
    b.one("LogSoftmax", [logits], axis=-1)
    b.nodes[-1].output[0] = "log_probs"
    t = width // 4
    return b.model(
        "ocr_recognizer",
        [_image_input("image", 1, height, width)],
        [helper.make_tensor_value_info("log_probs", TensorProto.FLOAT, ["N", t, classes])],
    )


# -- EfficientNet -------------------------------------------------------------------------------
B0 = ((1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 40, 2, 2, 5), (6, 80, 3, 2, 3),
      (6, 112, 3, 1, 5), (6, 192, 4, 2, 5), (6, 320, 1, 1, 3))  # fmt: skip
"""(expand ratio, channels, repeats, stride, kernel) per stage of EfficientNet-B0."""


def efficientnet(
    image: int = 224, classes: int = 1000, stages: int = 7, seed: int = 0
) -> onnx.ModelProto:
    """EfficientNet-B0-style: MBConv + squeeze-excitation + Swish; input 'input'."""
    b = _Builder(seed)

    def cbs(x: str, cin: int, cout: int, k: int, stride: int = 1, group: int = 1) -> str:
        return _silu(b, _conv_bn(b, x, cin, cout, k, stride, group))

    def se(x: str, c: int, squeeze: int) -> str:
        s = b.one("GlobalAveragePool", [x])
        s = _silu(b, _conv(b, s, c, squeeze))
        s = b.one("Sigmoid", [_conv(b, s, squeeze, c)])
        return b.one("Mul", [x, s])

    x = cbs("input", 3, 32, 3, 2)
    cin = 32
    for expand, cout, repeats, stride, k in B0[:stages]:
        for i in range(repeats):
            s = stride if i == 0 else 1
            hidden = cin * expand
            y = cbs(x, cin, hidden, 1) if expand != 1 else x
            y = cbs(y, hidden, hidden, k, s, group=hidden)
            y = se(y, hidden, max(1, cin // 4))
            y = _conv_bn(b, y, hidden, cout, 1, 1)
            x = b.one("Add", [x, y]) if s == 1 and cin == cout else y
            cin = cout
    x = cbs(x, cin, 1280, 1)
    x = b.one("Flatten", [b.one("GlobalAveragePool", [x])], axis=1)
    w = b.weight("fc_w", (classes, 1280))
    bias = b.const("fc_b", np.zeros(classes, np.float32))
    b.one("Gemm", [x, w, bias], transB=1)
    b.nodes[-1].output[0] = "logits"
    return b.model(
        "efficientnet_b0",
        [_image_input("input", 3, image, image)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
    )


# -- UNet -------------------------------------------------------------------------------------
def unet(
    image: int = 128, base: int = 32, depth: int = 4, classes: int = 3, seed: int = 0
) -> onnx.ModelProto:
    """UNet: (conv-BN-ReLU) x2 per level, MaxPool down, ConvTranspose up, Concat skips."""
    b = _Builder(seed)

    def double(x: str, cin: int, cout: int) -> str:
        x = b.one("Relu", [_conv_bn(b, x, cin, cout, 3, 1)])
        return b.one("Relu", [_conv_bn(b, x, cout, cout, 3, 1)])

    x, cin, skips = "image", 3, []
    for level in range(depth):
        cout = base * 2**level
        x = double(x, cin, cout)
        skips.append((x, cout))
        x = b.one("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
        cin = cout
    x = double(x, cin, cin * 2)
    cin *= 2
    for skip, c in reversed(skips):
        w = b.weight("up_w", (cin, c, 2, 2))
        bias = b.const("up_b", (0.1 * b.rng.standard_normal(c)).astype(np.float32))
        x = b.one("ConvTranspose", [x, w, bias], kernel_shape=[2, 2], strides=[2, 2])
        x = double(b.one("Concat", [skip, x], axis=1), 2 * c, c)
        cin = c
    _conv(b, x, cin, classes, 1)
    b.nodes[-1].output[0] = "masks"
    return b.model(
        "unet",
        [_image_input("image", 3, image, image)],
        [helper.make_tensor_value_info("masks", TensorProto.FLOAT, ["N", classes, image, image])],
    )
