"""The TensorFlow Lite front end: ``parse_tflite(path, input_shapes) -> ir.Graph``.

See :mod:`parsers.tflite.loader` (flatbuffer reading), :mod:`parsers.tflite.lower`
(tensors, quantization, the per-op context) and :mod:`parsers.tflite.ops` (the table
of per-builtin lowerings).
"""

from __future__ import annotations

from parsers.tflite.lower import parse_tflite

__all__ = ["parse_tflite"]
