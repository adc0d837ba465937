"""The TensorFlow front end: ``parse_tf(path, input_shapes) -> ir.Graph``.

Reads a SavedModel folder (its ``serving_default`` signature, frozen) or a frozen
GraphDef ``.pb``. See :mod:`parsers.tf.loader` (files, freezing, input/output names),
:mod:`parsers.tf.lower` (graph walk), :mod:`parsers.tf.ops` (per-op lowerings) and
:mod:`parsers.tf.rnn` (Keras LSTM/GRU loops -> IR LSTM/GRU).
"""

from __future__ import annotations

from parsers.tf.lower import parse_tf

__all__ = ["parse_tf"]
