"""The compression stage of the pipeline: --fp16 and the config file's quantization.

Maps the product-surface settings (``converter.config`` sections, ``--fp16``)
onto the passes that implement them, which take plain arguments and never see
the config file:

- ``--fp16 on|auto`` -> ``passes.precision.apply_fp16``
- ``quant_type=WEIGHT_QUANT`` -> ``passes.quant.weight.quantize_weights``
- ``quant_type=FULL_QUANT`` -> ``passes.quant.full.quantize_full`` (with ``--qtable``: the
  ops ``liteconv sensitivity`` keeps in float and each op's activation_quant_method)

Each returns a JSON-able report that ends up under ``compression`` in
``convert --report``.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from converter.config import Config, MixedPrecisionParam
from converter.errors import UsageError
from ir import Graph

__all__ = ["compress_graph"]


def compress_graph(
    graph: Graph,
    config: Config | None,
    fp16: str,
    say: Callable[[str], None],
    qtable: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    report: dict[str, Any] = {}
    quant_type = config.common_quant_param.quant_type if config is not None else ""
    if qtable is not None and quant_type != "FULL_QUANT":
        raise UsageError("--qtable needs quant_type=FULL_QUANT in --configFile")
    if fp16 != "off" and quant_type == "FULL_QUANT":
        raise UsageError("--fp16 and quant_type=FULL_QUANT exclude each other")
    if fp16 != "off":
        try:
            from passes.precision import apply_fp16
        except ImportError:
            raise UsageError("--fp16 is not available in this build") from None
        params = config.mixed_precision_param if config is not None else MixedPrecisionParam()
        report["fp16"] = apply_fp16(graph, mode=fp16, say=say, **dataclasses.asdict(params))
    if quant_type == "WEIGHT_QUANT":
        try:
            from passes.quant.weight import quantize_weights
        except ImportError:
            raise UsageError("quant_type=WEIGHT_QUANT is not available in this build") from None
        assert config is not None
        report["weight_quant"] = quantize_weights(
            graph,
            say=say,
            common=dataclasses.asdict(config.common_quant_param),
            mixed_bit=dataclasses.asdict(config.mixed_bit_weight_quant_param),
            weight=dataclasses.asdict(config.weight_quant_param),
            tune_feeds=_tune_feeds(graph, config),
        )
    elif quant_type == "FULL_QUANT":
        try:
            from passes.quant.full import quantize_full
        except ImportError:
            raise UsageError("quant_type=FULL_QUANT is not available in this build") from None
        assert config is not None
        report["full_quant"] = quantize_full(
            graph,
            say=say,
            common=dataclasses.asdict(config.common_quant_param),
            full=dataclasses.asdict(config.full_quant_param),
            data=dataclasses.asdict(config.data_preprocess_param),
            **({"qtable": qtable} if qtable is not None else {}),
        )
    elif quant_type == "DYNAMIC_QUANT":
        raise UsageError("quant_type=DYNAMIC_QUANT is not supported yet")
    return report


def _tune_feeds(graph: Graph, config: Config) -> list[dict[str, np.ndarray]] | None:
    """Inputs for auto_tune, bias correction and GPTQ: the first calibration samples, if any."""
    data = dataclasses.asdict(config.data_preprocess_param)
    weight = config.weight_quant_param
    wanted = (
        config.mixed_bit_weight_quant_param.auto_tune
        or weight.bias_correction
        or weight.rounding == "gptq"
    )
    if not (wanted and data.get("calibrate_path")):
        return None
    from passes.quant.calibrate import CalibrationData
    from passes.quant.weight import GPTQ_SAMPLES, TUNE_SAMPLES

    count = GPTQ_SAMPLES if weight.rounding == "gptq" or weight.bias_correction else TUNE_SAMPLES
    return list(itertools.islice(CalibrationData(graph, data), count))
