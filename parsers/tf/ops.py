"""The table of TF op lowerings, keyed by TF op name (see parsers.tf.context.Lowering).

Families: :mod:`parsers.tf.ops_math` (elementwise, reductions, matmul, casts),
:mod:`parsers.tf.ops_nn` (conv, pools, normalization, resize) and
:mod:`parsers.tf.ops_array` (shapes, slicing, gathers, lists, If/While).
"""

from __future__ import annotations

from parsers.tf.context import Lowering
from parsers.tf.ops_array import LOWERINGS as ARRAY
from parsers.tf.ops_math import LOWERINGS as MATH
from parsers.tf.ops_nn import LOWERINGS as NN

__all__ = ["LOWERINGS", "supported_ops"]

LOWERINGS: dict[str, Lowering] = {**MATH, **NN, **ARRAY}


def supported_ops() -> list[str]:
    """TF op names the front end lowers (plus Const, Placeholder and function calls)."""
    return sorted({*LOWERINGS, "Const", "Placeholder", "PartitionedCall",
                   "StatefulPartitionedCall"})  # fmt: skip
