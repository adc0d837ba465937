"""Graph passes: the pass contract, the manager, the core cleanup passes and pipelines."""

from __future__ import annotations

from passes.base import Pass, PassContext, PassResult
from passes.cse import EliminateCommonSubexpressions
from passes.dce import RemoveDeadNodes
from passes.fold import FoldConstants
from passes.infer_shapes import InferShapes
from passes.instruments import dump_instrument, verify_instrument
from passes.manager import FixedPoint, PassManager, PassRecord
from passes.noop import RemoveNoOps
from passes.pipeline import PIPELINES, default_pipeline, none_pipeline

__all__ = [
    "PIPELINES",
    "EliminateCommonSubexpressions",
    "FixedPoint",
    "FoldConstants",
    "InferShapes",
    "Pass",
    "PassContext",
    "PassManager",
    "PassRecord",
    "PassResult",
    "RemoveDeadNodes",
    "RemoveNoOps",
    "default_pipeline",
    "dump_instrument",
    "none_pipeline",
    "verify_instrument",
]
