"""The table of TFLite builtin lowerings, keyed by builtin operator name.

One module per family (:mod:`.nn`, :mod:`.math`, :mod:`.tensor`, :mod:`.rnn`,
:mod:`.control`), each
exporting ``LOWERINGS`` (name -> function of an :class:`~parsers.tflite.lower.OpContext`)
and optionally ``INT_SAFE`` (ops that may run on int tensors directly when all their
quantized tensors share one scale and zero point).
"""

from __future__ import annotations

from collections.abc import Callable

from parsers.tflite.lower import OpContext
from parsers.tflite.ops import control, math, nn, rnn, tensor

__all__ = ["INT_SAFE", "LOWERINGS", "supported_ops"]

LOWERINGS: dict[str, Callable[[OpContext], None]] = {
    **nn.LOWERINGS,
    **math.LOWERINGS,
    **tensor.LOWERINGS,
    **rnn.LOWERINGS,
    **control.LOWERINGS,
}
INT_SAFE: set[str] = nn.INT_SAFE | math.INT_SAFE | tensor.INT_SAFE


def supported_ops() -> list[str]:
    """Builtin operator names the front end lowers, sorted."""
    return sorted(LOWERINGS)
