"""``--configFile``: MindSpore Lite's converter config file, read with its own spellings.

An INI file; section and key names are MindSpore Lite's where it has them, so
a converter_lite config works unchanged::

    [common_quant_param]
    quant_type=WEIGHT_QUANT
    bit_num=8
    min_quant_weight_size=0
    min_quant_weight_channel=16

Sections liteconv adds are marked below. Unknown sections and keys are
refused with the list of valid ones (a typo must not silently disable a
setting); values are checked for type and range when read.
"""

from __future__ import annotations

import configparser
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from converter.errors import UsageError

__all__ = [
    "CommonQuantParam",
    "Config",
    "DataPreprocessParam",
    "FullQuantParam",
    "MixedBitWeightQuantParam",
    "MixedPrecisionParam",
    "WeightQuantParam",
    "load_config",
]


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.replace(";", ",").split(",") if v.strip()]


@dataclass
class CommonQuantParam:
    """[common_quant_param]"""

    quant_type: str = ""  # WEIGHT_QUANT | FULL_QUANT | DYNAMIC_QUANT
    bit_num: int = 8  # 0 = mixed bit (weight quant), 1..16
    min_quant_weight_size: int = 0
    # None: 16, or 1 under mixed-bit auto_tune (it measures each tensor, scales per tensor
    # where per-channel QuantParams would cost more than they save)
    min_quant_weight_channel: int | None = None
    skip_quant_node: list[str] = field(default_factory=list)
    debug_info_save_path: str = ""
    enable_encode: bool = True

    def check(self) -> None:
        if self.quant_type and self.quant_type not in (
            "WEIGHT_QUANT",
            "FULL_QUANT",
            "DYNAMIC_QUANT",
        ):
            raise UsageError(
                f"quant_type={self.quant_type}: use WEIGHT_QUANT, FULL_QUANT or DYNAMIC_QUANT"
            )
        if not 0 <= self.bit_num <= 16:
            raise UsageError(f"bit_num={self.bit_num}: must be 0 (mixed bit) or 1..16")


@dataclass
class MixedBitWeightQuantParam:
    """[mixed_bit_weight_quant_param]"""

    init_scale: float = 0.02
    auto_tune: bool = False
    use_cv_data: bool = False
    max_iterations: int = 100
    target_cosine: float = 0.995  # liteconv: the output cosine auto_tune spends bits for


@dataclass
class WeightQuantParam:
    """[weight_quant_param]"""

    dequant_strategy: str = "ON_THE_FLY"
    per_channel: bool = True
    bias_correction: bool = False
    symmetric: bool = True  # liteconv: symmetric (zero point 0) or asymmetric ranges
    kmeans: bool = False  # liteconv: k-means codebook (quantClusters) instead of a grid
    rounding: str = "nearest"  # liteconv: nearest | gptq (data-aware, passes/quant/gptq.py)
    gptq_sequential: bool = True  # liteconv: GPTQ layer by layer on the quantized graph's inputs

    def check(self) -> None:
        if self.rounding not in ("nearest", "gptq"):
            raise UsageError(f"rounding={self.rounding}: use nearest or gptq")


@dataclass
class FullQuantParam:
    """[full_quant_param]"""

    activation_quant_method: str = "MAX_MIN"  # MAX_MIN | KL | REMOVAL_OUTLIER (+ liteconv:
    # PERCENTILE, MSE)
    bias_correction: bool = False
    per_channel: bool = True
    target_device: str = ""
    symmetric: bool = False  # liteconv: symmetric activations

    def check(self) -> None:
        methods = ("MAX_MIN", "KL", "REMOVAL_OUTLIER", "PERCENTILE", "MSE")
        if self.activation_quant_method not in methods:
            raise UsageError(
                f"activation_quant_method={self.activation_quant_method}: "
                f"use one of {', '.join(methods)}"
            )


@dataclass
class DataPreprocessParam:
    """[data_preprocess_param]"""

    calibrate_path: str = ""  # input_name:/dir[,name2:/dir2]
    calibrate_size: int = 100
    input_type: str = "BIN"  # IMAGE | BIN (liteconv also reads .npy/.npz files here)
    image_to_format: str = "RGB"
    normalize_mean: list[float] = field(default_factory=list)
    normalize_std: list[float] = field(default_factory=list)
    resize_width: int = 0
    resize_height: int = 0
    resize_method: str = "LINEAR"
    center_crop_width: int = 0
    center_crop_height: int = 0

    def paths(self) -> dict[str, Path]:
        """calibrate_path as {input name: folder}."""
        out: dict[str, Path] = {}
        for item in _split(self.calibrate_path):
            name, sep, folder = item.partition(":")
            if not sep:
                raise UsageError(f"calibrate_path entry {item!r} is not input_name:/folder")
            out[name] = Path(folder)
        return out


@dataclass
class MixedPrecisionParam:
    """[mixed_precision_param] (liteconv): what stays float32 under --fp16."""

    keep_fp32_node: list[str] = field(default_factory=list)  # node names
    keep_fp32_op_type: list[str] = field(default_factory=list)  # IR op names
    target_cosine: float = 0.9999  # --fp16 auto: keep ops in float32 until this holds


_SECTIONS: dict[str, type] = {
    "common_quant_param": CommonQuantParam,
    "mixed_bit_weight_quant_param": MixedBitWeightQuantParam,
    "weight_quant_param": WeightQuantParam,
    "full_quant_param": FullQuantParam,
    "data_preprocess_param": DataPreprocessParam,
    "mixed_precision_param": MixedPrecisionParam,
}


@dataclass
class Config:
    """A parsed config file; sections absent from the file have their defaults."""

    common_quant_param: CommonQuantParam = field(default_factory=CommonQuantParam)
    mixed_bit_weight_quant_param: MixedBitWeightQuantParam = field(
        default_factory=MixedBitWeightQuantParam
    )
    weight_quant_param: WeightQuantParam = field(default_factory=WeightQuantParam)
    full_quant_param: FullQuantParam = field(default_factory=FullQuantParam)
    data_preprocess_param: DataPreprocessParam = field(default_factory=DataPreprocessParam)
    mixed_precision_param: MixedPrecisionParam = field(default_factory=MixedPrecisionParam)
    present: set[str] = field(default_factory=set)  # sections the file had
    path: str = ""


def _convert(section: str, key: str, raw: str, kind: Any) -> Any:
    where = f"[{section}] {key}={raw}"
    text = raw.strip()
    if typing.get_origin(kind) is types.UnionType:  # ``int | None``: None only by default
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    try:
        if kind is bool:
            low = text.lower()
            if low in ("true", "on", "1", "yes"):
                return True
            if low in ("false", "off", "0", "no"):
                return False
            raise ValueError
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        if kind == list[str]:
            return _split(text)
        if kind == list[float]:
            return [float(v) for v in _split(text.strip("[]"))]
        return text
    except ValueError:
        name = {bool: "true/false", int: "an integer", float: "a number"}.get(kind, "a list")
        raise UsageError(f"{where}: expected {name}") from None


def load_config(path: str | os.PathLike) -> Config:
    """Parse ``path``; UsageError (one sentence) on a missing file or a bad entry."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"config file not found: {p}")
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # keys are case-sensitive, as in MindSpore Lite
    try:
        parser.read(p, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0]
        raise UsageError(f"config file {p}: {first}") from None
    config = Config(path=str(p))
    for section in parser.sections():
        cls = _SECTIONS.get(section)
        if cls is None:
            raise UsageError(
                f"config file {p}: unknown section [{section}]; valid: {', '.join(_SECTIONS)}"
            )
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values = {}
        for key, raw in parser.items(section):
            if key not in fields:
                raise UsageError(
                    f"config file {p}: [{section}] has no key {key!r}; valid: {', '.join(fields)}"
                )
            kind = _TYPES[(section, key)]
            values[key] = _convert(section, key, raw, kind)
        obj = cls(**values)
        if hasattr(obj, "check"):
            obj.check()
        setattr(config, section, obj)
        config.present.add(section)
    return config


def _field_types() -> dict[tuple[str, str], Any]:
    out: dict[tuple[str, str], Any] = {}
    for section, cls in _SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            out[(section, f.name)] = hints[f.name]
    return out


_TYPES = _field_types()
