"""The Caffe front end: ``parse_caffe(prototxt, caffemodel, input_shapes) -> ir.Graph``.

See :mod:`parsers.caffe.proto` (message classes, reading files),
:mod:`parsers.caffe.net` (net structure, inputs, in-place renaming, weights) and
:mod:`parsers.caffe.layers` (the table of per-layer-type lowerings).
"""

from __future__ import annotations

from parsers.caffe.net import parse_caffe

__all__ = ["parse_caffe"]
