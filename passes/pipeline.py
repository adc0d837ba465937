"""Named pass pipelines (plain functions returning the passes to run).

``general`` (the default, MindSpore's ``--optimize general``): infer shapes,
then repeat fold / no-op removal / CSE / dead-node removal / shape inference
until nothing changes, then the fusions (``passes.fusions``: conv + BN/bias/
scale/activation, MatMul + bias/activation, LayerNorm, GELU, Swish/HardSwish)
and the cleanup again (it drops the constants the fusions replaced and infers
the shapes of the new nodes). ``none`` (``--optimize none``): shape inference only,
which fills in dtypes and shapes without rewriting any node.
"""

from __future__ import annotations

from collections.abc import Callable

from passes.base import Pass, PassContext
from passes.cse import EliminateCommonSubexpressions
from passes.dce import RemoveDeadNodes
from passes.fold import FoldConstants
from passes.fusions import Fusions
from passes.infer_shapes import InferShapes
from passes.manager import FixedPoint
from passes.noop import RemoveNoOps

__all__ = ["PIPELINES", "Pipeline", "default_pipeline", "none_pipeline"]

Pipeline = list[Pass | FixedPoint]


def default_pipeline(ctx: PassContext | None = None) -> Pipeline:
    """Shape inference, the cleanup passes to a fixed point, fusions, cleanup again."""
    ctx = ctx or PassContext()
    return [InferShapes(ctx), _cleanup(ctx), Fusions(ctx), _cleanup(ctx)]


def _cleanup(ctx: PassContext) -> FixedPoint:
    return FixedPoint(
        [
            FoldConstants(ctx),
            RemoveNoOps(ctx),
            EliminateCommonSubexpressions(ctx),
            RemoveDeadNodes(ctx),
            InferShapes(ctx),
        ],
        name="cleanup",
    )


def none_pipeline(ctx: PassContext | None = None) -> Pipeline:
    """No rewriting: only dtypes and shapes are inferred."""
    return [InferShapes(ctx or PassContext())]


PIPELINES: dict[str, Callable[..., Pipeline]] = {
    "none": none_pipeline,
    "general": default_pipeline,
}
"""``--optimize`` level -> pipeline factory ``f(ctx: PassContext | None = None)``."""
