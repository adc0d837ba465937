"""liteconv's product surface: ``convert`` a model to `.ms`, ``load`` one and run it.

    >>> import converter
    >>> converter.convert("model.onnx", fmk="ONNX", output="model.ms", verify=True)
    >>> m = converter.load("model.ms")
    >>> m.run({"input": x})
"""

from __future__ import annotations

from converter.model import Model, TensorInfo, load
from converter.pipeline import ConvertResult, convert
from converter.verify import Thresholds

__all__ = ["ConvertResult", "Model", "TensorInfo", "Thresholds", "convert", "load"]
