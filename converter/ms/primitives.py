"""IR op <-> MindSpore Lite primitive mapping (the ``Primitive`` union of MSL2).

``PRIMITIVES`` maps an IR op name to a :class:`Mapping`: the primitive table
it is written as, ``encode(node) -> fields | None`` and
``decode(fields, n_inputs) -> attrs | None``. ``fields`` are the primitive
table's fields (enum fields as their integer values); ``decode`` returns None
when the fields are not this op's (several ops share ``Activation``,
``ReduceFusion``, the pooling tables), so the reader tries the mappings of a
primitive in order.

A mapping is used only where it is LOSSLESS for the node at hand. The writer
checks that by encoding, writing the table, reading it back and decoding: the
op and every declared attribute must come back equal, else the node is written
as ``Custom`` (:mod:`converter.ms.attrs`). FLOAT attributes are float32 in
ONNX, so they are compared (and restored) at float32 precision. Inputs and
outputs are carried by the CNode as they are, so a mapping only has to carry
attributes; IR attributes that ONNX turned into inputs stay inputs even where
the MindSpore table has a field for them.

Spatial ops are mapped in 2D only; pads convert between ONNX order
``[top, left, bottom, right]`` and MindSpore ``pad_list [top, bottom, left, right]``.
Weights keep the IR layout (ONNX OIHW / IOHW) in the IR. MindSpore Lite stores
the weights of NHWC convolutions (Conv2DFusion, Conv2dTransposeFusion) as KHWC:
:func:`khwc_weights` tells the writer which constants to store that way (perm
:data:`KHWC_PERM`, Tensor.format KHWC) and :func:`restore_weight` gives the
reader the IR layout back, so the round trip is lossless.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from converter.ms.dtypes import has_typeid, ir_dtype, typeid
from converter.ms.schema_data import ENUMS
from ir import AttrType, DataType, Node, get_op, has_op
from ir.ops.base import REQUIRED

__all__ = [
    "BY_PRIMITIVE",
    "KHWC",
    "KHWC_PERM",
    "PRIMITIVES",
    "Mapping",
    "applicable",
    "clean_attrs",
    "decode_primitive",
    "khwc_weights",
    "restore_weight",
    "same_attrs",
]

Fields = dict[str, Any]
Attrs = dict[str, Any]


@dataclass(frozen=True)
class Mapping:
    """How one IR op is written as a MindSpore Lite primitive table."""

    op: str
    primitive: str
    encode: Callable[[Node], Fields | None]
    decode: Callable[[Fields, int], Attrs | None]


ACT = ENUMS["ActivationType"]
PAD = ENUMS["PadMode"]
FORMAT = {"NCHW": ENUMS["Format"]["NCHW"], "NHWC": ENUMS["Format"]["NHWC"]}
FORMAT_NAME = {v: k for k, v in FORMAT.items()}
AUTO_PAD = {"NOTSET": PAD["PAD"], "SAME_UPPER": PAD["SAME"], "VALID": PAD["VALID"]}
AUTO_PAD_NAME = {v: k for k, v in AUTO_PAD.items()}


def _get(node: Node, name: str, fallback: Any = None) -> Any:
    """Attribute ``name`` (with the declared default), ``fallback`` when undeclared."""
    if name in node.attrs:
        return node.attrs[name]
    opdef = get_op(node.op)
    return opdef.default(name) if name in opdef.attrs else fallback


def _swap_pads(pads: Any) -> list[int] | None:
    """ONNX [t, l, b, r] <-> MindSpore [t, b, l, r] (the same permutation both ways)."""
    if pads is None:
        return None
    p = [int(x) for x in pads]
    return [p[0], p[2], p[1], p[3]] if len(p) == 4 else None


def _spatial_rank(node: Node) -> int | None:
    for name in ("kernel_shape", "strides", "dilations"):
        value = _get(node, name)
        if value is not None:
            return len(value)
    pads = _get(node, "pads")
    if pads is not None:
        return len(pads) // 2
    w = node.input(1)
    return None if w is None or w.rank is None else w.rank - 2


def _list(value: Any) -> list[int] | None:
    return None if value is None else [int(v) for v in value]


# -- families -------------------------------------------------------------------
def plain(op: str, primitive: str) -> Mapping:
    """An op without attributes whose primitive table carries none we need."""
    return Mapping(op, primitive, lambda node: {}, lambda f, n: {})


def fused_binary(op: str, primitive: str) -> Mapping:
    """Binary arithmetic ``*Fusion`` tables: only without a fused activation."""
    return Mapping(
        op,
        primitive,
        lambda node: {"activation_type": ACT["NO_ACTIVATION"]},
        lambda f, n: {} if f["activation_type"] == ACT["NO_ACTIVATION"] else None,
    )


def binary_only(op: str, primitive: str) -> Mapping:
    """Variadic ONNX ops (Min, Max) written as binary primitives when they have two inputs."""
    return Mapping(
        op,
        primitive,
        lambda node: {} if len(node.inputs) == 2 else None,
        lambda f, n: {} if n == 2 else None,
    )


def activation(op: str, kind: str, alpha: str | None = None) -> Mapping:
    """Activation(activation_type=kind), ``alpha`` attribute -> Activation.alpha."""
    code = ACT[kind]

    def encode(node: Node) -> Fields:
        fields: Fields = {"activation_type": code}
        if alpha is not None:
            fields["alpha"] = float(_get(node, alpha))
        if op == "Gelu":
            fields["approximate"] = _get(node, "approximate", "none") == "tanh"
        return fields

    def decode(f: Fields, n: int) -> Attrs | None:
        if f["activation_type"] != code:
            return None
        attrs: Attrs = {} if alpha is None else {alpha: f["alpha"]}
        if op == "Gelu":
            attrs["approximate"] = "tanh" if f["approximate"] else "none"
        return attrs

    return Mapping(op, "Activation", encode, decode)


def _hard_sigmoid() -> Mapping:
    def encode(node: Node) -> Fields | None:
        ok = np.float32(node.attr("alpha")) == np.float32(1 / 6) and node.attr("beta") == 0.5
        return {"activation_type": ACT["HSIGMOID"]} if ok else None

    def decode(f: Fields, n: int) -> Attrs | None:
        return {"alpha": 1 / 6, "beta": 0.5} if f["activation_type"] == ACT["HSIGMOID"] else None

    return Mapping("HardSigmoid", "Activation", encode, decode)


# -- convolution and pooling ------------------------------------------------------
def _conv_fields(node: Node) -> Fields | None:
    if _spatial_rank(node) != 2:
        return None
    pad_mode = AUTO_PAD.get(_get(node, "auto_pad", "NOTSET"))
    fmt = FORMAT.get(_get(node, "format", "NCHW"))
    if pad_mode is None or fmt is None:
        return None
    fields: Fields = {
        "format": fmt,
        "kernel_size": _list(_get(node, "kernel_shape")),
        "stride": _list(_get(node, "strides")),
        "dilation": _list(_get(node, "dilations")),
        "pad_mode": pad_mode,
        "group": int(_get(node, "group", 1)),
        "activation_type": ACT["NO_ACTIVATION"],
    }
    w = node.input(1)
    if w is not None and w.is_static and w.rank == 4:  # IR weights are OIHW/IOHW in both formats
        per_group = w.shape[1] if node.op == "Conv" else w.shape[0]  # type: ignore[index]
        out = w.shape[0] if node.op == "Conv" else w.shape[1]  # type: ignore[index]
        if node.op == "Conv":
            fields.update(in_channel=per_group * fields["group"], out_channel=out)
        else:
            fields.update(in_channel=per_group, out_channel=out * fields["group"])
    return fields


def _conv_attrs(f: Fields) -> Attrs | None:
    fmt = FORMAT_NAME.get(f["format"])
    auto_pad = AUTO_PAD_NAME.get(f["pad_mode"])
    if f["activation_type"] != ACT["NO_ACTIVATION"] or fmt is None or auto_pad is None:
        return None
    return {
        "format": fmt,
        "kernel_shape": f["kernel_size"],
        "strides": f["stride"],
        "dilations": f["dilation"],
        "auto_pad": auto_pad,
        "group": f["group"] or 1,
    }


def _conv() -> Mapping:
    def encode(node: Node) -> Fields | None:
        fields = _conv_fields(node)
        if fields is not None:
            fields["pad_list"] = _swap_pads(_get(node, "pads"))
        return fields

    def decode(f: Fields, n: int) -> Attrs | None:
        attrs = _conv_attrs(f)
        if attrs is not None:
            attrs["pads"] = _swap_pads(f["pad_list"])
        return attrs

    return Mapping("Conv", "Conv2DFusion", encode, decode)


def _conv_transpose() -> Mapping:
    def encode(node: Node) -> Fields | None:
        if _get(node, "output_shape") is not None:
            return None
        fields = _conv_fields(node)
        if fields is not None:
            fields["pad_list"] = _swap_pads(_get(node, "pads"))
            fields["output_paddings"] = _list(_get(node, "output_padding"))
        return fields

    def decode(f: Fields, n: int) -> Attrs | None:
        attrs = _conv_attrs(f)
        if attrs is not None:
            attrs["pads"] = _swap_pads(f["pad_list"])
            attrs["output_padding"] = f["output_paddings"]
        return attrs

    return Mapping("ConvTranspose", "Conv2dTransposeFusion", encode, decode)


def _pool(op: str, primitive: str) -> Mapping:
    def encode(node: Node) -> Fields | None:
        if len(node.outputs) != 1 or _spatial_rank(node) != 2:
            return None
        if _get(node, "dilations") is not None or _get(node, "storage_order", 0) != 0:
            return None
        if _get(node, "count_include_pad", 0) != 0:
            return None
        pad_mode = AUTO_PAD.get(_get(node, "auto_pad", "NOTSET"))
        fmt = FORMAT.get(_get(node, "format", "NCHW"))
        if pad_mode is None or fmt is None:
            return None
        return {
            "kernel_size": _list(_get(node, "kernel_shape")),
            "strides": _list(_get(node, "strides")),
            "pad": _swap_pads(_get(node, "pads")),
            "pad_mode": pad_mode,
            "round_mode": int(_get(node, "ceil_mode", 0)),
            "format": fmt,
            "global": False,
            "activation_type": ACT["NO_ACTIVATION"],
        }

    def decode(f: Fields, n: int) -> Attrs | None:
        fmt = FORMAT_NAME.get(f["format"])
        auto_pad = AUTO_PAD_NAME.get(f["pad_mode"])
        if f["global"] or f["activation_type"] or fmt is None or auto_pad is None:
            return None
        return {
            "kernel_shape": f["kernel_size"],
            "strides": f["strides"],
            "pads": _swap_pads(f["pad"]),
            "auto_pad": auto_pad,
            "ceil_mode": f["round_mode"],
            "format": fmt,
        }

    return Mapping(op, primitive, encode, decode)


def _global_pool(op: str, primitive: str) -> Mapping:
    def encode(node: Node) -> Fields | None:
        fmt = FORMAT.get(_get(node, "format", "NCHW"))
        return None if fmt is None else {"global": True, "format": fmt}

    def decode(f: Fields, n: int) -> Attrs | None:
        fmt = FORMAT_NAME.get(f["format"])
        if not f["global"] or f["activation_type"] or fmt is None or f["kernel_size"]:
            return None
        return {"format": fmt}

    return Mapping(op, primitive, encode, decode)


# -- linear algebra ---------------------------------------------------------------
def _gemm() -> Mapping:
    """Gemm(alpha=beta=1, transA=0, transB=1, 1-D or no C) is FullConnection."""

    def encode(node: Node) -> Fields | None:
        c = node.input(2)
        ok = (
            np.float32(node.attr("alpha")) == 1
            and np.float32(node.attr("beta")) == 1
            and node.attr("transA") == 0
            and node.attr("transB") == 1
            and (c is None or c.rank == 1)
        )
        return {"has_bias": c is not None, "use_axis": False} if ok else None

    def decode(f: Fields, n: int) -> Attrs | None:
        if f["use_axis"] or f["activation_type"]:
            return None
        return {"transB": 1}

    return Mapping("Gemm", "FullConnection", encode, decode)


def _matmul() -> Mapping:
    def decode(f: Fields, n: int) -> Attrs | None:
        plain_mm = not f["transpose_a"] and not f["transpose_b"] and not f["activation_type"]
        return {} if plain_mm else None

    return Mapping("MatMul", "MatMulFusion", lambda node: {}, decode)


# -- fused ops (ir/ops/fused.py): the activation in the table's activation_type ----------
_FUSED_ACT: dict[int, tuple[str, list[float] | None]] = {
    ACT["RELU"]: ("Relu", None),
    ACT["RELU6"]: ("Clip", [0.0, 6.0]),
    ACT["SIGMOID"]: ("Sigmoid", None),
    ACT["TANH"]: ("Tanh", None),
    ACT["HSWISH"]: ("HardSwish", None),
}
"""activation_type -> (activation, activation_params) of ConvAct / MatMulAct."""


def _fused_act_code(node: Node) -> int | None:
    """activation_type of a ConvAct/MatMulAct activation; None when no exact code exists."""
    name, params = _get(node, "activation"), _get(node, "activation_params")
    params = None if params is None else [float(np.float32(p)) for p in params]
    for code, (act, act_params) in _FUSED_ACT.items():
        if name == act and params == act_params:
            return code
    return None


def _fused_act_attrs(code: int) -> Attrs | None:
    spec = _FUSED_ACT.get(code)
    if spec is None:
        return None
    attrs: Attrs = {"activation": spec[0]}
    if spec[1] is not None:
        attrs["activation_params"] = list(spec[1])
    return attrs


def _conv_act() -> Mapping:
    """ConvAct (2D) = Conv2DFusion with a non-zero activation_type."""

    def encode(node: Node) -> Fields | None:
        code = _fused_act_code(node)
        fields = None if code is None else _conv_fields(node)
        if fields is None:
            return None
        fields["pad_list"] = _swap_pads(_get(node, "pads"))
        fields["activation_type"] = code
        w = node.input(1)
        if "in_channel" in fields and w is not None and w.is_static:
            # _conv_fields reads any op but Conv as ConvTranspose: ConvAct's W is Conv's
            fields.update(in_channel=w.shape[1] * fields["group"], out_channel=w.shape[0])  # type: ignore[index]
        return fields

    def decode(f: Fields, n: int) -> Attrs | None:
        act = _fused_act_attrs(f["activation_type"])
        attrs = _conv_attrs({**f, "activation_type": ACT["NO_ACTIVATION"]})
        if act is None or attrs is None:
            return None
        return {**attrs, "pads": _swap_pads(f["pad_list"]), **act}

    return Mapping("ConvAct", "Conv2DFusion", encode, decode)


def _matmul_act() -> Mapping:
    """MatMulAct = MatMulFusion(A, B, bias?) with an activation or a bias (else it is MatMul)."""

    def encode(node: Node) -> Fields | None:
        if _get(node, "activation") == "none" and _get(node, "activation_params") is None:
            return {} if node.input(2) is not None else None
        code = _fused_act_code(node)
        return None if code is None else {"activation_type": code}

    def decode(f: Fields, n: int) -> Attrs | None:
        if f["transpose_a"] or f["transpose_b"]:
            return None
        if f["activation_type"] == ACT["NO_ACTIVATION"]:
            return {"activation": "none"} if n == 3 else None
        return _fused_act_attrs(f["activation_type"])

    return Mapping("MatMulAct", "MatMulFusion", encode, decode)


def _binary_act(op: str, primitive: str) -> Mapping:
    """AddAct/SubAct/MulAct/DivAct = the binary ``*Fusion`` table with a non-zero
    activation_type (zero is the plain binary op's)."""

    def encode(node: Node) -> Fields | None:
        code = _fused_act_code(node)
        return None if code is None else {"activation_type": code}

    return Mapping(op, primitive, encode, lambda f, n: _fused_act_attrs(f["activation_type"]))


def _lstm() -> Mapping:
    def encode(node: Node) -> Fields | None:
        for name in ("activations", "activation_alpha", "activation_beta", "clip"):
            if node.attr(name) is not None:
                return None
        direction = node.attr("direction")
        if node.attr("input_forget") or node.attr("layout") or direction == "reverse":
            return None
        w = node.input(1)
        fields: Fields = {
            "bidirectional": direction == "bidirectional",
            "has_bias": node.input(3) is not None,
            "hidden_size": node.attr("hidden_size") or 0,
            "num_layers": 1,
            "num_directions": 2 if direction == "bidirectional" else 1,
        }
        if w is not None and w.is_static and w.rank == 3:
            fields["input_size"] = w.shape[2]  # type: ignore[index]
        return fields

    def decode(f: Fields, n: int) -> Attrs | None:
        if f["num_layers"] not in (0, 1) or f["proj_size"] or f["dropout"]:
            return None
        return {
            "direction": "bidirectional" if f["bidirectional"] else "forward",
            "hidden_size": f["hidden_size"] or None,
        }

    return Mapping("LSTM", "LSTM", encode, decode)


# -- normalization ------------------------------------------------------------------
def _batch_norm() -> Mapping:
    def encode(node: Node) -> Fields | None:
        if _get(node, "format", "NCHW") != "NCHW" or node.attr("training_mode") != 0:
            return None
        if len(node.outputs) != 1:
            return None
        return {"epsilon": node.attr("epsilon"), "momentum": node.attr("momentum"), "mode": 0}

    def decode(f: Fields, n: int) -> Attrs | None:
        return {"epsilon": f["epsilon"], "momentum": f["momentum"], "format": "NCHW"}

    return Mapping("BatchNormalization", "FusedBatchNorm", encode, decode)


def _layer_norm() -> Mapping:
    def encode(node: Node) -> Fields | None:
        if node.attr("stash_type") != 1 or len(node.outputs) != 1:
            return None
        axis = int(node.attr("axis"))
        return {
            "begin_norm_axis": axis,
            "begin_params_axis": axis,
            "epsilon": node.attr("epsilon"),
            "elementwise_affine": True,
        }

    def decode(f: Fields, n: int) -> Attrs | None:
        if f["begin_norm_axis"] != f["begin_params_axis"] or not f["elementwise_affine"]:
            return None
        return {"axis": f["begin_norm_axis"], "epsilon": f["epsilon"]}

    return Mapping("LayerNormalization", "LayerNormFusion", encode, decode)


def _instance_norm() -> Mapping:
    def encode(node: Node) -> Fields | None:
        if _get(node, "format", "NCHW") != "NCHW":
            return None
        return {"epsilon": node.attr("epsilon")}

    return Mapping(
        "InstanceNormalization",
        "InstanceNorm",
        encode,
        lambda f, n: {"epsilon": f["epsilon"], "format": "NCHW"},
    )


def _lrn() -> Mapping:
    """MindSpore LRN follows TF: depth_radius = (size-1)/2, alpha per element = alpha/size."""

    def encode(node: Node) -> Fields | None:
        size = int(node.attr("size"))
        if size % 2 == 0 or _get(node, "format", "NCHW") != "NCHW":
            return None
        return {
            "depth_radius": (size - 1) // 2,
            "bias": node.attr("bias"),
            "alpha": node.attr("alpha") / size,
            "beta": node.attr("beta"),
            "norm_region": "ACROSS_CHANNELS",
        }

    def decode(f: Fields, n: int) -> Attrs | None:
        size = 2 * f["depth_radius"] + 1
        alpha = float(np.float32(np.float32(f["alpha"]) * np.float32(size)))
        return {
            "size": size,
            "bias": f["bias"],
            "alpha": alpha,
            "beta": f["beta"],
            "format": "NCHW",
        }

    return Mapping("LRN", "LRN", encode, decode)


# -- tensor ops ---------------------------------------------------------------------
def _attr_fields(
    op: str, primitive: str, pairs: dict[str, str], require: dict[str, Any] | None = None
) -> Mapping:
    """Attributes copied one to one into same-typed fields (attr -> field)."""
    require = require or {}

    def encode(node: Node) -> Fields | None:
        if any(_get(node, k) != v for k, v in require.items()):
            return None
        return {field: _get(node, attr) for attr, field in pairs.items()}

    def decode(f: Fields, n: int) -> Attrs | None:
        return {attr: f[field] for attr, field in pairs.items()} | dict(require)

    return Mapping(op, primitive, encode, decode)


def _softmax() -> Mapping:
    return Mapping(
        "Softmax",
        "Softmax",
        lambda node: {"axis": [int(node.attr("axis"))]},
        lambda f, n: {"axis": f["axis"][0]} if f["axis"] and len(f["axis"]) == 1 else None,
    )


def _split() -> Mapping:
    """``num_outputs`` given: output_num; absent: output_num + size_splits (maybe empty)."""

    def encode(node: Node) -> Fields:
        num = node.attr("num_outputs")
        fields: Fields = {"axis": int(node.attr("axis"))}
        if num is not None:
            fields["output_num"] = int(num)
            return fields
        fields["output_num"] = len(node.outputs)
        split = node.input(1)
        const = None if split is None else split.const
        fields["size_splits"] = [] if const is None else [int(v) for v in const.reshape(-1)]
        return fields

    def decode(f: Fields, n: int) -> Attrs:
        num = f["output_num"] if f["size_splits"] is None else None
        return {"axis": f["axis"], "num_outputs": num}

    return Mapping("Split", "Split", encode, decode)


_PAD_MODE = {
    "constant": ENUMS["PaddingMode"]["CONSTANT"],
    "reflect": ENUMS["PaddingMode"]["REFLECT"],
}


def _pad() -> Mapping:
    def encode(node: Node) -> Fields | None:
        mode = _PAD_MODE.get(node.attr("mode"))
        if mode is None:
            return None
        fields: Fields = {"padding_mode": mode}
        pads = node.input(1)
        if pads is not None and pads.const is not None and node.input(3) is None:
            p = [int(v) for v in pads.const.reshape(-1)]
            half = len(p) // 2
            fields["paddings"] = {"data": [{"data": [p[i], p[i + half]]} for i in range(half)]}
        value = node.input(2)
        if value is not None and value.const is not None and value.const.size == 1:
            if value.dtype.is_float or value.dtype.is_integer:
                fields["constant_value"] = float(value.const.reshape(-1)[0])
        return fields

    def decode(f: Fields, n: int) -> Attrs | None:
        names = {v: k for k, v in _PAD_MODE.items()}
        mode = names.get(f["padding_mode"])
        return None if mode is None else {"mode": mode}

    return Mapping("Pad", "PadFusion", encode, decode)


def _reduce(op: str, mode: str) -> Mapping:
    code = ENUMS["ReduceMode"][mode]

    def encode(node: Node) -> Fields | None:
        if node.attr("noop_with_empty_axes") != 0:
            return None
        return {"keep_dims": bool(node.attr("keepdims")), "mode": code, "coeff": 1.0}

    def decode(f: Fields, n: int) -> Attrs | None:
        if f["mode"] != code or f["reduce_to_end"]:
            return None
        return {"keepdims": int(f["keep_dims"]), "noop_with_empty_axes": 0}

    return Mapping(op, "ReduceFusion", encode, decode)


def _arg(op: str, primitive: str) -> Mapping:
    def encode(node: Node) -> Fields | None:
        if node.attr("select_last_index") != 0:
            return None
        return {
            "axis": int(node.attr("axis")),
            "top_k": 1,
            "keep_dims": bool(node.attr("keepdims")),
            "out_max_value": False,
        }

    def decode(f: Fields, n: int) -> Attrs | None:
        if f["top_k"] not in (0, 1) or f["out_max_value"]:
            return None
        return {"axis": f["axis"], "keepdims": int(f["keep_dims"]), "select_last_index": 0}

    return Mapping(op, primitive, encode, decode)


def _topk() -> Mapping:
    return Mapping(
        "TopK",
        "TopKFusion",
        lambda node: {
            "axis": int(node.attr("axis")),
            "largest": int(node.attr("largest")),
            "sorted": bool(node.attr("sorted")),
        },
        lambda f, n: {"axis": f["axis"], "largest": f["largest"], "sorted": int(f["sorted"])},
    )


def _exp() -> Mapping:
    def decode(f: Fields, n: int) -> Attrs | None:
        return {} if (f["base"], f["scale"], f["shift"]) == (-1, 1, 0) else None

    return Mapping(
        "Exp", "ExpFusion", lambda node: {"base": -1.0, "scale": 1.0, "shift": 0.0}, decode
    )


def _pow() -> Mapping:
    return Mapping(
        "Pow",
        "PowFusion",
        lambda node: {"scale": 1.0, "shift": 0.0},
        lambda f, n: {} if (f["scale"], f["shift"]) == (1, 0) else None,
    )


def _constant_of_shape() -> Mapping:
    def encode(node: Node) -> Fields | None:
        value = node.attr("value")
        if value is None:
            return {}
        dtype = DataType.from_numpy(value.dtype)
        if value.size != 1 or not has_typeid(dtype) or dtype == DataType.STRING:
            return None
        return {"data_type": typeid(dtype), "value": [float(value.reshape(-1)[0])]}

    def decode(f: Fields, n: int) -> Attrs | None:
        if not f["data_type"]:
            return {}
        dtype = ir_dtype(f["data_type"])
        if dtype is None or not f["value"] or len(f["value"]) != 1:
            return None
        return {"value": np.array(f["value"], dtype=np.float32).astype(dtype.numpy)}

    return Mapping("ConstantOfShape", "ConstantOfShape", encode, decode)


def _resize() -> Mapping:
    method = {"linear": 0, "nearest": 1, "cubic": 2}
    ctm = {"asymmetric": 0, "align_corners": 1, "half_pixel": 2}
    nearest = {"round_prefer_floor": 1, "round_prefer_ceil": 2, "floor": 3, "ceil": 4}

    def encode(node: Node) -> Fields | None:
        if node.attr("antialias") or node.attr("axes") is not None:
            return None
        if node.attr("keep_aspect_ratio_policy") != "stretch":
            return None
        m = method.get(node.attr("mode"))
        c = ctm.get(node.attr("coordinate_transformation_mode"))
        nm = nearest.get(node.attr("nearest_mode"))
        fmt = FORMAT.get(_get(node, "format", "NCHW"))
        if None in (m, c, nm, fmt):
            return None
        return {
            "format": fmt,
            "method": m,
            "coordinate_transform_mode": c,
            "nearest_mode": nm,
            "cubic_coeff": node.attr("cubic_coeff_a"),
            "exclude_outside": int(node.attr("exclude_outside")),
            "extrapolation_value": node.attr("extrapolation_value"),
        }

    def decode(f: Fields, n: int) -> Attrs | None:
        inv = lambda table, v: next((k for k, x in table.items() if x == v), None)  # noqa: E731
        attrs = {
            "mode": inv(method, f["method"]),
            "coordinate_transformation_mode": inv(ctm, f["coordinate_transform_mode"]),
            "nearest_mode": inv(nearest, f["nearest_mode"]),
            "format": FORMAT_NAME.get(f["format"]),
        }
        if None in attrs.values():
            return None
        attrs.update(
            cubic_coeff_a=f["cubic_coeff"],
            exclude_outside=f["exclude_outside"],
            extrapolation_value=f["extrapolation_value"],
            antialias=0,
            axes=None,
            keep_aspect_ratio_policy="stretch",
        )
        return attrs

    return Mapping("Resize", "Resize", encode, decode)


def _space_depth(op: str, primitive: str) -> Mapping:
    def encode(node: Node) -> Fields | None:
        fmt = FORMAT.get(_get(node, "format", "NCHW"))
        if fmt is None:
            return None
        fields: Fields = {"block_size": int(node.attr("blocksize")), "format": fmt}
        if op == "DepthToSpace":
            fields["mode"] = node.attr("mode")
        return fields

    def decode(f: Fields, n: int) -> Attrs | None:
        fmt = FORMAT_NAME.get(f["format"])
        if fmt is None:
            return None
        attrs: Attrs = {"blocksize": f["block_size"], "format": fmt}
        if op == "DepthToSpace":
            attrs["mode"] = f["mode"] or "DCR"
        return attrs

    return Mapping(op, primitive, encode, decode)


def _shape() -> Mapping:
    ok = lambda node: node.attr("start") == 0 and node.attr("end") is None  # noqa: E731
    return Mapping(
        "Shape",
        "Shape",
        lambda node: {} if ok(node) else None,
        lambda f, n: {"start": 0, "end": None},
    )


def _build() -> tuple[Mapping, ...]:
    return (
        _conv(),
        _conv_transpose(),
        _conv_act(),
        _matmul_act(),  # before MatMul: it claims MatMulFusion with a bias or an activation
        _matmul(),
        _gemm(),
        fused_binary("Add", "AddFusion"),
        fused_binary("Sub", "SubFusion"),
        fused_binary("Mul", "MulFusion"),
        fused_binary("Div", "DivFusion"),
        _binary_act("AddAct", "AddFusion"),  # after the plain ops: they claim activation 0
        _binary_act("SubAct", "SubFusion"),
        _binary_act("MulAct", "MulFusion"),
        _binary_act("DivAct", "DivFusion"),
        activation("Relu", "RELU"),
        activation("Sigmoid", "SIGMOID"),
        activation("Tanh", "TANH"),
        activation("LeakyRelu", "LEAKY_RELU", "alpha"),
        activation("Elu", "ELU", "alpha"),
        activation("HardSwish", "HSWISH"),
        activation("Gelu", "GELU"),
        activation("Softplus", "SOFTPLUS"),
        activation("Softsign", "SOFTSIGN"),
        activation("ThresholdedRelu", "THRESHOLDRELU", "alpha"),
        activation("Sign", "SIGN"),
        activation("Swish", "SWISH", "alpha"),
        _hard_sigmoid(),
        _pool("MaxPool", "MaxPoolFusion"),
        _pool("AveragePool", "AvgPoolFusion"),
        _global_pool("GlobalMaxPool", "MaxPoolFusion"),
        _global_pool("GlobalAveragePool", "AvgPoolFusion"),
        _attr_fields("Reshape", "Reshape", {}, require={"allowzero": 0}),
        _attr_fields("Concat", "Concat", {"axis": "axis"}),
        _softmax(),
        _batch_norm(),
        _layer_norm(),
        _instance_norm(),
        _lrn(),
        plain("Squeeze", "Squeeze"),
        plain("Unsqueeze", "Unsqueeze"),
        _attr_fields("Flatten", "Flatten", {"axis": "axis"}),
        _shape(),
        _split(),
        _pad(),
        _reduce("ReduceSum", "ReduceSum"),
        _reduce("ReduceMean", "ReduceMean"),
        _reduce("ReduceMax", "ReduceMax"),
        _reduce("ReduceMin", "ReduceMin"),
        _reduce("ReduceProd", "ReduceProd"),
        _reduce("ReduceSumSquare", "ReduceSumSquare"),
        _reduce("ReduceL1", "ReduceASum"),
        _reduce("ReduceL2", "ReduceL2"),
        plain("Sqrt", "Sqrt"),
        _exp(),
        plain("Log", "Log"),
        plain("Abs", "Abs"),
        plain("Neg", "Neg"),
        plain("Erf", "Erf"),
        plain("Floor", "Floor"),
        plain("Ceil", "Ceil"),
        plain("Round", "Round"),
        plain("Sin", "Sin"),
        plain("Cos", "Cos"),
        plain("Reciprocal", "Reciprocal"),
        plain("Not", "LogicalNot"),
        _pow(),
        plain("Where", "Where"),
        plain("Equal", "Equal"),
        plain("Less", "Less"),
        plain("Greater", "Greater"),
        plain("LessOrEqual", "LessEqual"),
        plain("GreaterOrEqual", "GreaterEqual"),
        plain("And", "LogicalAnd"),
        plain("Or", "LogicalOr"),
        binary_only("Min", "Minimum"),
        binary_only("Max", "Maximum"),
        plain("Sum", "AddN"),
        _attr_fields("Mod", "FloorMod", {}, require={"fmod": 0}),
        plain("Tile", "TileFusion"),
        plain("Expand", "BroadcastTo"),
        plain("Clip", "Clip"),
        _lstm(),
        _resize(),
        plain("Range", "Range"),
        _constant_of_shape(),
        _attr_fields("Dropout", "Dropout", {}, require={"seed": None}),
        _topk(),
        _arg("ArgMax", "ArgMaxFusion"),
        _arg("ArgMin", "ArgMinFusion"),
        plain("PRelu", "PReLUFusion"),
        plain("Size", "Size"),
        _attr_fields("GatherND", "GatherNd", {}, require={"batch_dims": 0}),
        _attr_fields("OneHot", "OneHot", {"axis": "axis"}),
        _attr_fields("CumSum", "CumSum", {"exclusive": "exclusive", "reverse": "reverse"}),
        _attr_fields(
            "NonMaxSuppression", "NonMaxSuppression", {"center_point_box": "center_point_box"}
        ),
        _space_depth("DepthToSpace", "DepthToSpace"),
        _space_depth("SpaceToDepth", "SpaceToDepth"),
    )


PRIMITIVES: dict[str, Mapping] = {m.op: m for m in _build()}
"""IR op name -> its primitive mapping (used only when lossless for the node)."""

BY_PRIMITIVE: dict[str, list[Mapping]] = {}
for _m in PRIMITIVES.values():
    BY_PRIMITIVE.setdefault(_m.primitive, []).append(_m)


def _equal(kind: AttrType, a: Any, b: Any) -> bool:
    if a is b:
        return True
    if a is None or b is None or a is REQUIRED or b is REQUIRED:
        return False
    if kind == AttrType.FLOAT:
        return bool(np.float32(a) == np.float32(b))
    if kind == AttrType.FLOATS:
        if len(a) != len(b):
            return False
        return all(np.float32(x) == np.float32(y) for x, y in zip(a, b, strict=True))
    if kind in (AttrType.INTS, AttrType.STRINGS, AttrType.GRAPHS):
        return list(a) == list(b)
    if kind == AttrType.TENSOR:
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and (a.tolist() == b.tolist() if a.dtype == object else a.tobytes() == b.tobytes())
        )
    return bool(a == b)


def _coerce(kind: AttrType, value: Any) -> Any:
    if value is None:
        return None
    if kind == AttrType.INT:
        return int(value)
    if kind == AttrType.FLOAT:
        return float(value)
    if kind == AttrType.INTS:
        return [int(v) for v in value]
    if kind == AttrType.FLOATS:
        return [float(v) for v in value]
    return value


def clean_attrs(op: str, attrs: Attrs) -> Attrs:
    """Decoded attributes as the IR keeps them: declared ones, typed, defaults left out."""
    if not has_op(op):
        return {k: v for k, v in attrs.items() if v is not None}
    specs = get_op(op).attrs
    out: Attrs = {}
    for name, value in attrs.items():
        spec = specs.get(name)
        if spec is None:
            continue
        value = _coerce(spec.type, value)
        if not spec.required and _equal(spec.type, value, spec.default):
            continue
        out[name] = value
    return out


def same_attrs(op: str, a: Attrs, b: Attrs) -> bool:
    """Whether two attribute dicts of ``op`` mean the same (defaults applied)."""
    specs = get_op(op).attrs
    if any(name not in specs for name in (*a, *b)):
        return False
    return all(
        _equal(spec.type, a.get(name, spec.default), b.get(name, spec.default))
        for name, spec in specs.items()
    )


def decode_primitive(primitive: str, fields: Fields, n_inputs: int) -> tuple[str, Attrs] | None:
    """(IR op, attrs) of a primitive table, None when no mapping claims it."""
    for mapping in BY_PRIMITIVE.get(primitive, ()):
        attrs = mapping.decode(fields, n_inputs)
        if attrs is not None:
            return mapping.op, clean_attrs(mapping.op, attrs)
    return None


def applicable(node: Node) -> Mapping | None:
    """The mapping to try for ``node``: declared op, no undeclared attributes."""
    mapping = PRIMITIVES.get(node.op)
    if mapping is None or not has_op(node.op):
        return None
    if any(name not in get_op(node.op).attrs for name in node.attrs):
        return None
    return mapping


# -- weight layout -----------------------------------------------------------------
KHWC = ENUMS["Format"]["KHWC"]
KHWC_PERM = (0, 2, 3, 1)
"""KCHW -> KHWC: OIHW -> OHWI (Conv), IOHW -> IHWO (ConvTranspose), as MindSpore Lite's
ToNHWCFormat pass stores the weights of NHWC convolutions."""
_KHWC_OPS = {"Conv", "ConvAct", "ConvTranspose"}


def khwc_weights(nodes: list[Node]) -> set[int]:
    """ids of the constants to store KHWC: 4-D weights (input 1) read only by NHWC
    Conv/ConvAct/ConvTranspose nodes (per-tensor or axis-0 quantization only)."""
    chosen: set[int] = set()
    for node in nodes:
        w = node.input(1)
        if node.op not in _KHWC_OPS or w is None or w.const is None or w.rank != 4:
            continue
        q = w.quant
        if q is not None and q.axis not in (None, 0):
            continue
        if all(
            user.op in _KHWC_OPS and i == 1 and _get(user, "format", "NCHW") == "NHWC"
            for user, i in w.uses
        ):
            chosen.add(id(w))
    return chosen


def restore_weight(array: np.ndarray, tensor_format: int) -> np.ndarray:
    """A constant as read from a Tensor of ``tensor_format``, back in the IR layout
    (a transposed view: no copy)."""
    if tensor_format == KHWC and array.ndim == 4:
        return array.transpose(np.argsort(KHWC_PERM))
    return array
