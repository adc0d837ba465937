"""The ONNX front end: ``parse_onnx(path_or_proto, input_shapes) -> ir.Graph``.

See :mod:`parsers.onnx.loader` (files, external data, type inference),
:mod:`parsers.onnx.lower` (node lowering) and :mod:`parsers.onnx.upgrades`
(old opset forms -> the latest ONNX form the IR holds).
"""

from __future__ import annotations

from parsers.onnx.lower import parse_onnx

__all__ = ["parse_onnx"]
