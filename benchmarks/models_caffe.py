"""Caffe test nets: deploy prototxts written by hand, seeded random caffemodels.

``NETS`` maps a name to prototxt text (small sizes): ``alexnet`` (LRN, grouped conv,
InnerProduct, Dropout, Softmax), ``vgg`` (legacy ``input``/``input_dim`` header),
``mobilenet_ssd`` (depthwise conv, BatchNorm/Scale/ReLU, Permute/Flatten/Concat
detection heads, Reshape + Softmax), ``resnet`` (bottleneck blocks with Eltwise SUM,
PReLU, global pooling), ``squeezenet`` (fire modules, CEIL-mode pooling with pad),
``upsample`` (Deconvolution, Interp, Upsample, Crop) and ``layers`` (every other
supported layer type once).

``write_net(name, folder, seed)`` writes ``<name>.prototxt`` and ``<name>.caffemodel``;
blob shapes come from the NumPy Caffe reference (:func:`param_shapes`), which also
propagates shapes layer by layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from converter.reference.caffe import NumpyNet, param_shapes
from parsers.caffe.proto import caffe_message, read_prototxt

__all__ = ["NETS", "write_caffemodel", "write_net"]


def _input(name: str, *dims: int) -> str:
    shape = " ".join(f"dim: {d}" for d in dims)
    return (
        f'layer {{ name: "{name}" type: "Input" top: "{name}"\n'
        f"  input_param {{ shape {{ {shape} }} }} }}\n"
    )


def _conv(name: str, bottom: str, n: int, k: int, s: int = 1, p: int = 0, g: int = 1,
          bias: bool = True, top: str | None = None) -> str:  # fmt: skip
    extra = "" if bias else " bias_term: false"
    return (
        f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{top or name}"\n'
        f"  convolution_param {{ num_output: {n} kernel_size: {k} stride: {s} pad: {p} "
        f"group: {g}{extra} }} }}\n"
    )


def _relu(name: str, blob: str) -> str:
    return f'layer {{ name: "{name}" type: "ReLU" bottom: "{blob}" top: "{blob}" }}\n'


def _bn_scale_relu(name: str, blob: str) -> str:
    return (
        f'layer {{ name: "{name}/bn" type: "BatchNorm" bottom: "{blob}" top: "{blob}"\n'
        f"  batch_norm_param {{ use_global_stats: true eps: 0.001 }} }}\n"
        f'layer {{ name: "{name}/scale" type: "Scale" bottom: "{blob}" top: "{blob}"\n'
        f"  scale_param {{ bias_term: true }} }}\n"
        f'layer {{ name: "{name}/relu" type: "ReLU" bottom: "{blob}" top: "{blob}" }}\n'
    )


def _pool(name: str, bottom: str, kind: str, k: int, s: int, p: int = 0) -> str:
    return (
        f'layer {{ name: "{name}" type: "Pooling" bottom: "{bottom}" top: "{name}"\n'
        f"  pooling_param {{ pool: {kind} kernel_size: {k} stride: {s} pad: {p} }} }}\n"
    )


def _fc(name: str, bottom: str, n: int) -> str:
    return (
        f'layer {{ name: "{name}" type: "InnerProduct" bottom: "{bottom}" top: "{name}"\n'
        f"  inner_product_param {{ num_output: {n} }} }}\n"
    )


ALEXNET = (
    'name: "alexnet"\n'
    + _input("data", 1, 3, 35, 35)
    + _conv("conv1", "data", 16, 5, s=2)
    + _relu("relu1", "conv1")
    + 'layer { name: "norm1" type: "LRN" bottom: "conv1" top: "norm1"\n'
    "  lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }\n"
    + _pool("pool1", "norm1", "MAX", 3, 2)
    + _conv("conv2", "pool1", 24, 5, p=2, g=2)
    + _relu("relu2", "conv2")
    + 'layer { name: "norm2" type: "LRN" bottom: "conv2" top: "norm2"\n'
    "  lrn_param { local_size: 3 alpha: 0.001 beta: 0.75 } }\n"
    + _pool("pool2", "norm2", "MAX", 3, 2)
    + _conv("conv3", "pool2", 32, 3, p=1)
    + _relu("relu3", "conv3")
    + _conv("conv4", "conv3", 32, 3, p=1, g=2)
    + _relu("relu4", "conv4")
    + _conv("conv5", "conv4", 24, 3, p=1, g=2)
    + _relu("relu5", "conv5")
    + _pool("pool5", "conv5", "MAX", 3, 2)
    + _fc("fc6", "pool5", 64)
    + _relu("relu6", "fc6")
    + 'layer { name: "drop6" type: "Dropout" bottom: "fc6" top: "fc6"\n'
    "  dropout_param { dropout_ratio: 0.5 } }\n"
    + _fc("fc7", "fc6", 64)
    + _relu("relu7", "fc7")
    + 'layer { name: "drop7" type: "Dropout" bottom: "fc7" top: "fc7" }\n'
    + _fc("fc8", "fc7", 10)
    + 'layer { name: "prob" type: "Softmax" bottom: "fc8" top: "prob" }\n'
)

VGG = (
    'name: "vgg"\ninput: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 16\ninput_dim: 16\n'
    + _conv("conv1_1", "data", 8, 3, p=1)
    + _relu("relu1_1", "conv1_1")
    + _conv("conv1_2", "conv1_1", 8, 3, p=1)
    + _relu("relu1_2", "conv1_2")
    + _pool("pool1", "conv1_2", "MAX", 2, 2)
    + _conv("conv2_1", "pool1", 16, 3, p=1)
    + _relu("relu2_1", "conv2_1")
    + _conv("conv2_2", "conv2_1", 16, 3, p=1)
    + _relu("relu2_2", "conv2_2")
    + _pool("pool2", "conv2_2", "MAX", 2, 2)
    + _conv("conv3_1", "pool2", 32, 3, p=1)
    + _relu("relu3_1", "conv3_1")
    + _pool("pool3", "conv3_1", "MAX", 2, 2)
    + _fc("fc6", "pool3", 48)
    + _relu("relu6", "fc6")
    + 'layer { name: "drop6" type: "Dropout" bottom: "fc6" top: "fc6"\n'
    "  include { phase: TEST } }\n"
    + 'layer { name: "train_only" type: "Dropout" bottom: "fc6" top: "fc6"\n'
    "  include { phase: TRAIN } }\n"
    + _fc("fc7", "fc6", 10)
    + 'layer { name: "prob" type: "Softmax" bottom: "fc7" top: "prob" }\n'
)


def _dw_block(i: int, bottom: str, cin: int, cout: int, s: int) -> str:
    dw, pw = f"conv{i}/dw", f"conv{i}"
    return (
        _conv(dw, bottom, cin, 3, s=s, p=1, g=cin, bias=False)
        + _bn_scale_relu(dw, dw)
        + _conv(pw, dw, cout, 1, bias=False)
        + _bn_scale_relu(pw, pw)
    )


def _ssd_head(src: str, boxes: int, classes: int) -> str:
    out = ""
    for kind, n in (("loc", boxes * 4), ("conf", boxes * classes)):
        name = f"{src}_mbox_{kind}"
        out += (
            _conv(name, src, n, 3, p=1)
            + f'layer {{ name: "{name}_perm" type: "Permute" bottom: "{name}" '
            f'top: "{name}_perm"\n  permute_param {{ order: 0 order: 2 order: 3 order: 1 }} }}\n'
            + f'layer {{ name: "{name}_flat" type: "Flatten" bottom: "{name}_perm" '
            f'top: "{name}_flat"\n  flatten_param {{ axis: 1 }} }}\n'
        )
    return out


MOBILENET_SSD = (
    'name: "mobilenet_ssd"\n'
    + _input("data", 1, 3, 32, 32)
    + _conv("conv0", "data", 8, 3, s=2, p=1, bias=False)
    + _bn_scale_relu("conv0", "conv0")
    + _dw_block(1, "conv0", 8, 16, 1)
    + _dw_block(2, "conv1", 16, 32, 2)
    + _dw_block(3, "conv2", 32, 32, 1)
    + _dw_block(4, "conv3", 32, 48, 2)
    + _ssd_head("conv3", 3, 4)
    + _ssd_head("conv4", 3, 4)
    + 'layer { name: "mbox_loc" type: "Concat" bottom: "conv3_mbox_loc_flat"\n'
    '  bottom: "conv4_mbox_loc_flat" top: "mbox_loc" concat_param { axis: 1 } }\n'
    'layer { name: "mbox_conf" type: "Concat" bottom: "conv3_mbox_conf_flat"\n'
    '  bottom: "conv4_mbox_conf_flat" top: "mbox_conf" concat_param { axis: 1 } }\n'
    'layer { name: "mbox_conf_reshape" type: "Reshape" bottom: "mbox_conf"\n'
    '  top: "mbox_conf_reshape" reshape_param { shape { dim: 0 dim: -1 dim: 4 } } }\n'
    'layer { name: "mbox_conf_softmax" type: "Softmax" bottom: "mbox_conf_reshape"\n'
    '  top: "mbox_conf_softmax" softmax_param { axis: 2 } }\n'
    'layer { name: "mbox_conf_flatten" type: "Flatten" bottom: "mbox_conf_softmax"\n'
    '  top: "mbox_conf_flatten" flatten_param { axis: 1 } }\n'
)


def _bottleneck(name: str, bottom: str, mid: int, out: int, project: bool, s: int = 1) -> str:
    text = ""
    short = bottom
    if project:
        text += _conv(f"{name}_branch1", bottom, out, 1, s=s, bias=False)
        text += _bn_scale_relu(f"{name}_branch1", f"{name}_branch1").rsplit("layer {", 1)[0]
        short = f"{name}_branch1"
    a, b, c = f"{name}_branch2a", f"{name}_branch2b", f"{name}_branch2c"
    text += _conv(a, bottom, mid, 1, s=s, bias=False) + _bn_scale_relu(a, a)
    text += _conv(b, a, mid, 3, p=1, bias=False) + _bn_scale_relu(b, b)
    text += _conv(c, b, out, 1, bias=False)
    text += _bn_scale_relu(c, c).rsplit("layer {", 1)[0]
    coeff = "" if project else " coeff: 1 coeff: 0.5"
    text += (
        f'layer {{ name: "{name}" type: "Eltwise" bottom: "{short}" bottom: "{c}" top: "{name}"\n'
        f"  eltwise_param {{ operation: SUM{coeff} }} }}\n"
        f'layer {{ name: "{name}_relu" type: "PReLU" bottom: "{name}" top: "{name}" }}\n'
    )
    return text


RESNET = (
    'name: "resnet"\n'
    + _input("data", 2, 3, 24, 24)
    + _conv("conv1", "data", 16, 7, s=2, p=3, bias=False)
    + _bn_scale_relu("conv1", "conv1")
    + _pool("pool1", "conv1", "MAX", 3, 2)
    + _bottleneck("res2a", "pool1", 8, 32, project=True)
    + _bottleneck("res2b", "res2a", 8, 32, project=False)
    + _bottleneck("res3a", "res2b", 16, 64, project=True, s=2)
    + 'layer { name: "pool5" type: "Pooling" bottom: "res3a" top: "pool5"\n'
    "  pooling_param { pool: AVE global_pooling: true } }\n"
    + _fc("fc10", "pool5", 10)
    + 'layer { name: "prob" type: "Softmax" bottom: "fc10" top: "prob" }\n'
)


def _fire(name: str, bottom: str, squeeze: int, expand: int) -> str:
    sq, e1, e3 = f"{name}/squeeze1x1", f"{name}/expand1x1", f"{name}/expand3x3"
    return (
        _conv(sq, bottom, squeeze, 1) + _relu(f"{sq}/relu", sq)
        + _conv(e1, sq, expand, 1) + _relu(f"{e1}/relu", e1)
        + _conv(e3, sq, expand, 3, p=1) + _relu(f"{e3}/relu", e3)
        + f'layer {{ name: "{name}/concat" type: "Concat" bottom: "{e1}" bottom: "{e3}" '
        f'top: "{name}/concat" }}\n'
    )  # fmt: skip


SQUEEZENET = (
    'name: "squeezenet"\n'
    + _input("data", 1, 3, 30, 30)
    + _conv("conv1", "data", 16, 3, s=2)
    + _relu("relu_conv1", "conv1")
    + _pool("pool1", "conv1", "MAX", 3, 2)  # 14 -> ceil: 7 (floor would give 6)
    + _fire("fire2", "pool1", 8, 16)
    + _fire("fire3", "fire2/concat", 8, 16)
    + _pool("pool3", "fire3/concat", "MAX", 2, 2, p=1)  # 7 -> 4 with the last-window rule
    + _fire("fire4", "pool3", 12, 24)
    + _pool("pool4", "fire4/concat", "AVE", 3, 2, p=1)  # windows cross H + pad
    + _pool("pool4b", "fire4/concat", "AVE", 2, 3)  # ceil without pad: clipped windows
    + 'layer { name: "drop9" type: "Dropout" bottom: "pool4" top: "pool4" }\n'
    + _conv("conv10", "pool4", 10, 1)
    + _relu("relu_conv10", "conv10")
    + 'layer { name: "pool10" type: "Pooling" bottom: "conv10" top: "pool10"\n'
    "  pooling_param { pool: AVE global_pooling: true } }\n"
    + 'layer { name: "prob" type: "Softmax" bottom: "pool10" top: "prob" }\n'
)

UPSAMPLE = (
    'name: "upsample"\n'
    + _input("data", 1, 4, 12, 12)
    + _conv("conv1", "data", 8, 3, p=1)
    + _relu("relu1", "conv1")
    + _pool("pool1", "conv1", "MAX", 2, 2)
    + 'layer { name: "deconv1" type: "Deconvolution" bottom: "pool1" top: "deconv1"\n'
    "  convolution_param { num_output: 8 kernel_size: 4 stride: 2 pad: 1 } }\n"
    'layer { name: "deconv2" type: "Deconvolution" bottom: "pool1" top: "deconv2"\n'
    "  convolution_param { num_output: 8 kernel_h: 3 kernel_w: 2 stride: 2 group: 4\n"
    "    bias_term: false } }\n"
    'layer { name: "interp" type: "Interp" bottom: "pool1" top: "interp"\n'
    "  interp_param { zoom_factor: 2 } }\n"
    'layer { name: "interp_hw" type: "Interp" bottom: "pool1" top: "interp_hw"\n'
    "  interp_param { height: 12 width: 12 } }\n"
    'layer { name: "interp_down" type: "Interp" bottom: "pool1" top: "interp_down"\n'
    "  interp_param { height: 5 width: 9 } }\n"
    'layer { name: "up" type: "Upsample" bottom: "pool1" top: "up" upsample_param { scale: 2 } }\n'
    'layer { name: "crop" type: "Crop" bottom: "deconv2" bottom: "conv1" top: "crop"\n'
    "  crop_param { axis: 2 offset: 1 offset: 0 } }\n"
    'layer { name: "fuse" type: "Eltwise" bottom: "deconv1" bottom: "up" top: "fuse"\n'
    "  eltwise_param { operation: MAX } }\n"
    'layer { name: "gate" type: "Eltwise" bottom: "fuse" bottom: "crop" top: "gate"\n'
    "  eltwise_param { operation: PROD } }\n"
    'layer { name: "cat" type: "Concat" bottom: "gate" bottom: "interp_hw" bottom: "conv1"\n'
    '  top: "cat" }\n' + _conv("score", "cat", 3, 1)
)

LAYERS = (
    'name: "layers"\n'
    + _input("data", 2, 6, 7, 7)
    + 'layer { name: "split" type: "Split" bottom: "data" top: "a" top: "b" top: "c" }\n'
    'layer { name: "elu" type: "ELU" bottom: "a" top: "elu" elu_param { alpha: 0.7 } }\n'
    'layer { name: "sig" type: "Sigmoid" bottom: "b" top: "sig" }\n'
    'layer { name: "tanh" type: "TanH" bottom: "c" top: "tanh" }\n'
    'layer { name: "abs" type: "AbsVal" bottom: "data" top: "abs" }\n'
    'layer { name: "pow" type: "Power" bottom: "abs" top: "pow"\n'
    "  power_param { power: 1.5 scale: 0.5 shift: 1 } }\n"
    'layer { name: "log" type: "Log" bottom: "pow" top: "log" log_param { base: 2 shift: 0.5 } }\n'
    'layer { name: "exp" type: "Exp" bottom: "tanh" top: "exp" exp_param { scale: 0.5 } }\n'
    'layer { name: "exp2" type: "Exp" bottom: "tanh" top: "exp2" exp_param { base: 3 shift: 1 } }\n'
    'layer { name: "leaky" type: "ReLU" bottom: "sig" top: "sig"\n'
    "  relu_param { negative_slope: 0.1 } }\n"
    'layer { name: "relu6" type: "ReLU6" bottom: "elu" top: "relu6" }\n'
    'layer { name: "bias" type: "Bias" bottom: "log" top: "bias" }\n'
    'layer { name: "scale2" type: "Scale" bottom: "bias" bottom: "exp2" top: "scale2"\n'
    "  scale_param { axis: 0 bias_term: true } }\n"
    'layer { name: "lrn_within" type: "LRN" bottom: "scale2" top: "lrn_within"\n'
    "  lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL } }\n"
    'layer { name: "slice" type: "Slice" bottom: "lrn_within" top: "s1" top: "s2" top: "s3"\n'
    "  slice_param { axis: 1 slice_point: 1 slice_point: 4 } }\n"
    'layer { name: "slice_eq" type: "Slice" bottom: "exp" top: "e1" top: "e2" }\n'
    'layer { name: "prelu" type: "PReLU" bottom: "s3" top: "prelu"\n'
    "  prelu_param { channel_shared: true } }\n"
    'layer { name: "bn_batch" type: "BatchNorm" bottom: "s2" top: "bn_batch"\n'
    "  batch_norm_param { use_global_stats: false } }\n"
    'layer { name: "sum" type: "Eltwise" bottom: "e1" bottom: "e2" bottom: "bn_batch"\n'
    '  top: "sum" eltwise_param { coeff: 1 coeff: -1 coeff: 0.5 } }\n'
    'layer { name: "mx" type: "Eltwise" bottom: "relu6" bottom: "sig" top: "mx"\n'
    "  eltwise_param { operation: MAX } }\n"
    'layer { name: "shuffle" type: "ShuffleChannel" bottom: "mx" top: "shuffle"\n'
    "  shuffle_channel_param { group: 3 } }\n"
    'layer { name: "bnll" type: "BNLL" bottom: "shuffle" top: "bnll" }\n'
    'layer { name: "reshape" type: "Reshape" bottom: "bnll" top: "reshape"\n'
    "  reshape_param { shape { dim: -1 } axis: 1 num_axes: 2 } }\n"
    'layer { name: "ip" type: "InnerProduct" bottom: "reshape" top: "ip"\n'
    "  inner_product_param { num_output: 5 axis: 2 transpose: true } }\n"
    'layer { name: "flat" type: "Flatten" bottom: "ip" top: "flat"\n'
    "  flatten_param { axis: 1 end_axis: 2 } }\n"
    'layer { name: "softmax" type: "Softmax" bottom: "flat" top: "softmax" }\n'
    'layer { name: "ip2" type: "InnerProduct" bottom: "prelu" top: "ip2"\n'
    "  inner_product_param { num_output: 4 bias_term: false } }\n"
)

NETS: dict[str, str] = {
    "alexnet": ALEXNET,
    "vgg": VGG,
    "mobilenet_ssd": MOBILENET_SSD,
    "resnet": RESNET,
    "squeezenet": SQUEEZENET,
    "upsample": UPSAMPLE,
    "layers": LAYERS,
}


def _random_blobs(
    layer: Any, shapes: list[tuple[int, ...]], rng: np.random.Generator
) -> list[np.ndarray]:
    t = layer.type
    if t == "BatchNorm":
        c = shapes[0][0]
        factor = 2.0  # Caffe stores running sums scaled by this factor
        mean = rng.normal(0, 0.2, c) * factor
        var = rng.uniform(0.5, 2.0, c) * factor
        return [mean, var, np.array([factor])]
    if t == "Scale":
        return [rng.uniform(0.5, 1.5, shapes[0]), *[rng.normal(0, 0.1, s) for s in shapes[1:]]]
    if t == "PReLU":
        return [rng.uniform(0.0, 0.4, shapes[0])]
    out = []
    for i, s in enumerate(shapes):
        fan_in = int(np.prod(s[1:])) if len(s) > 1 else 1
        if t == "Deconvolution" and i == 0:
            fan_in = s[0] * int(np.prod(s[2:]))
        std = np.sqrt(2.0 / max(fan_in, 1)) if i == 0 else 0.1
        out.append(rng.normal(0, std, s))
    return out


def write_caffemodel(prototxt: Path, out: Path, seed: int = 0) -> Path:
    """A caffemodel with seeded random blobs for every layer of ``prototxt``."""
    net = read_prototxt(prototxt)
    rng = np.random.default_rng(seed)
    model = caffe_message("NetParameter")()
    model.name = net.name
    blobs: dict[str, list[np.ndarray]] = {}

    def make(layer: Any, xs: list[np.ndarray]) -> None:
        shapes = param_shapes(layer, [x.shape for x in xs])
        if not shapes or layer.name in blobs:
            return
        arrays = [np.asarray(a, np.float32) for a in _random_blobs(layer, shapes, rng)]
        blobs[layer.name] = arrays
        entry = model.layer.add(name=layer.name, type=layer.type)
        for a in arrays:
            b = entry.blobs.add()
            b.shape.dim.extend(a.shape)
            b.data.extend(a.reshape(-1).tolist())

    ref = NumpyNet(net, blobs)
    feeds = {k: np.zeros(s, np.float32) for k, s in ref.input_shapes().items()}
    ref.forward(feeds, on_layer=make)
    out.write_bytes(model.SerializeToString())
    return out


def write_net(name: str, folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """Write ``NETS[name]`` as ``<folder>/<name>.prototxt`` + a random ``.caffemodel``."""
    folder.mkdir(parents=True, exist_ok=True)
    proto = folder / f"{name}.prototxt"
    proto.write_text(NETS[name])
    return proto, write_caffemodel(proto, folder / f"{name}.caffemodel", seed)
