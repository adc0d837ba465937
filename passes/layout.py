"""Layout conversion: run every spatial op in one data layout (NHWC or NCHW).

:class:`ConvertLayout` switches each layout-sensitive op (trait
LAYOUT_SENSITIVE, a ``format`` attribute) whose data input has a known rank
to the target layout: the op reads ``Transpose(x, format->target)``, gets
``format=target`` and its output ``y`` becomes ``Transpose(y', target->format)``
of the new output ``y'``; numerics are unchanged. Ops without a real layout
meaning of their ``format`` are converted by remapping their per-axis
operands instead (Resize: scales/sizes/roi permuted, or ``axes`` remapped).
Weights keep the ONNX layout (OIHW) in the IR in both formats. Rank-2 data
([N, C]) has the same meaning in both formats, so only ``format`` changes.
Refused (left as they are): unknown rank, MaxPool with a used Indices output,
BatchNormalization in training mode, FusedConv with a Z input, Resize with
non-constant scales/sizes/roi.

:func:`layout_passes` is the pipeline ``--outputFormat`` runs after the
optimization pipeline: convert, then the transpose cleanup of
:mod:`passes.transpose` to a fixed point (fold, compose/cancel, merge, push),
then Transposes that only move size-1 axes become Reshapes. On a CNN
converted from NCHW what remains is one Transpose after each graph input and
one before each graph output (graph inputs and outputs keep their layout and
names, so the converted model is a drop-in replacement).
"""

from __future__ import annotations

import logging

from ir import Graph, Node, Trait, get_op, has_op
from passes.base import Pass, PassContext
from passes.dce import RemoveDeadNodes
from passes.infer_shapes import InferShapes
from passes.manager import FixedPoint
from passes.noop import RemoveNoOps
from passes.transpose import (
    ComposeTransposes,
    FoldConstantTransposes,
    MergeTransposes,
    PushTransposes,
    TransposeToReshape,
    apply_rewrite,
    insert_node,
    inverse,
    nchw_to_nhwc,
    new_transpose,
    nhwc_to_nchw,
    push_rule,
)

__all__ = ["LAYOUTS", "ConvertLayout", "layout_passes", "transpose_cleanup"]

logger = logging.getLogger(__name__)

LAYOUTS = ("NHWC", "NCHW")


class ConvertLayout(Pass):
    """Switch layout-sensitive ops to ``target`` with Transposes around them."""

    name = "ConvertLayout"

    def __init__(self, ctx: PassContext | None = None, target: str = "NHWC") -> None:
        super().__init__(ctx)
        if target not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, not {target!r}")
        self.target = target

    def run(self, graph: Graph) -> bool:
        changed = False
        for g in list(graph.all_graphs()):
            for node in g:
                changed |= convert_node(g, node, self.target)
        return changed


def convert_node(graph: Graph, node: Node, target: str) -> bool:
    """Run ``node`` in ``target`` layout; False when it already does or cannot."""
    if not has_op(node.op) or not get_op(node.op).has(Trait.LAYOUT_SENSITIVE):
        return False
    fmt = node.attr("format")
    x = node.input(0)
    if fmt == target or fmt not in LAYOUTS or x is None or x.rank is None or x.rank < 2:
        return False
    if x.rank == 2:  # [N, C]: the channel axis is 1 in both layouts
        node.attrs["format"] = target
        return True
    rank = x.rank
    to_fmt = nhwc_to_nchw(rank) if target == "NHWC" else nchw_to_nhwc(rank)
    rule = push_rule(node.op)
    rw = None if rule is None else rule(node, to_fmt, target)
    if rw is None or rw.data != (0,):
        logger.debug("%s (%s) stays %s", node.name, node.op, fmt)
        return False
    t = new_transpose(graph, x, inverse(to_fmt))
    insert_node(graph, node, t)
    apply_rewrite(graph, node, rw, {0: t.outputs[0]})
    return True


def transpose_cleanup(ctx: PassContext | None = None, layout: str | None = None) -> FixedPoint:
    """The transpose passes with dead-node removal and shape inference, to a fixed point."""
    ctx = ctx or PassContext()
    return FixedPoint(
        [
            FoldConstantTransposes(ctx),
            ComposeTransposes(ctx),
            MergeTransposes(ctx),
            PushTransposes(ctx, layout=layout),
            RemoveNoOps(ctx),
            RemoveDeadNodes(ctx),
            InferShapes(ctx),
        ],
        name="transpose_cleanup",
    )


def layout_passes(target: str, ctx: PassContext | None = None) -> list[Pass | FixedPoint]:
    """Shapes, :class:`ConvertLayout`, the transpose cleanup, Transpose -> Reshape."""
    ctx = ctx or PassContext()
    return [
        InferShapes(ctx),
        ConvertLayout(ctx, target),
        transpose_cleanup(ctx, layout=target),
        TransposeToReshape(ctx),
        InferShapes(ctx),
    ]
