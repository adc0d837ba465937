"""Named pass pipelines: the ``--optimize`` levels and ``--disable-pass``.

Levels (``PIPELINES``; ``general``, MindSpore Lite's spelling, is ``full``):

- ``none``: shape inference only: dtypes and shapes are filled in, no node is
  rewritten or removed;
- ``basic``: shape inference, then the cleanup to a fixed point: constant
  folding, no-op removal, CSE (constant dedupe included), dead-node removal,
  shape inference;
- ``full`` (default): ``basic``, then the fusions of every family in
  :data:`FUSION_FAMILIES` (one :class:`~passes.fusions.Fusions` pass trying
  the enabled families' rules in the listed order), the cleanup again (it drops
  the constants the fusions replaced and infers the new nodes' shapes), then
  the :data:`LATE_PASSES` in order and the cleanup once more.

``disable``: pass names (``FoldConstants``, ``Fusions``, ...) or fusion
family names (``conv``, ``gelu``, ...), case-insensitive; an unknown name
raises :class:`PipelineError` listing the valid ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from passes.base import Pass, PassContext
from passes.cse import EliminateCommonSubexpressions
from passes.dce import RemoveDeadNodes
from passes.fold import FoldConstants
from passes.fusions import (
    DEFAULT_RULES,
    Fusions,
    activation,
    activation_extra,
    attention,
    conv,
    gelu,
    gemm,
    layernorm,
    matmul,
    normalization,
    pad,
    reshape,
    rnn,
)
from passes.fusions.binary import FuseBinaryActivations
from passes.fusions.engine import RulePass, RuleSet
from passes.fusions.qkv import FuseParallelMatMuls
from passes.fusions.recurrent import FuseRecurrent
from passes.infer_shapes import InferShapes
from passes.manager import FixedPoint
from passes.noop import RemoveNoOps

__all__ = [
    "FUSION_FAMILIES",
    "LATE_PASSES",
    "LEVELS",
    "PIPELINES",
    "Pipeline",
    "PipelineError",
    "basic_pipeline",
    "build_pipeline",
    "default_pipeline",
    "disable_names",
    "full_pipeline",
    "none_pipeline",
    "rule_stats",
]

Pipeline = list[Pass | FixedPoint]

FUSION_FAMILIES: tuple[tuple[str, RuleSet], ...] = (
    ("gelu", gelu.rules),
    ("activation", activation.rules),
    ("activation_extra", activation_extra.rules),
    ("normalization", normalization.rules),  # before layernorm: InstanceNorm shares its core
    ("layernorm", layernorm.rules),
    ("gemm", gemm.rules),
    ("pad", pad.rules),
    ("conv", conv.rules),
    ("matmul", matmul.rules),
    ("attention", attention.rules),
    ("reshape", reshape.rules),
    ("rnn", rnn.rules),
)
"""Fusion rule families in trial order (``--disable-pass`` names): one line per family.

Recognition families come first so that what they produce is absorbed by the
conv/matmul fusions in a later round. Rules of ``passes.fusions.DEFAULT_RULES``
listed in no family run last as the family ``other``.
"""

LATE_PASSES: tuple[type[Pass], ...] = (FuseRecurrent, FuseParallelMatMuls, FuseBinaryActivations)
"""Passes run at level ``full`` after the fusions in this order, then the cleanup (e.g. layout).

:class:`~passes.fusions.binary.FuseBinaryActivations` (Add/Sub/Mul/Div + activation) comes
last: the binary ops it absorbs are parts of what the fusions and FuseRecurrent recognize."""

CLEANUP_PASSES: tuple[type[Pass], ...] = (
    FoldConstants,
    RemoveNoOps,
    EliminateCommonSubexpressions,
    RemoveDeadNodes,
    InferShapes,
)
"""The ``basic`` cleanup, repeated until nothing changes."""

LEVELS = ("none", "basic", "full")
ALIASES = {"general": "full"}


class PipelineError(ValueError):
    """An unknown level or ``--disable-pass`` name."""


def _pass_name(cls: type[Pass]) -> str:
    return cls.name or cls.__name__


def families() -> tuple[tuple[str, RuleSet], ...]:
    """:data:`FUSION_FAMILIES` plus ``other``: default rules no family lists."""
    listed = {id(r) for _, rules in FUSION_FAMILIES for r in rules}
    rest = [r for r in DEFAULT_RULES if id(r) not in listed]
    return FUSION_FAMILIES + ((("other", RuleSet(rest)),) if rest else ())


def disable_names() -> list[str]:
    """Every name ``--disable-pass`` accepts: passes, then fusion families."""
    passes = [_pass_name(c) for c in (InferShapes, *CLEANUP_PASSES, Fusions, *LATE_PASSES)]
    return list(dict.fromkeys([*passes, *(name for name, _ in families())]))


def _canonical(disable: Iterable[str]) -> set[str]:
    valid = {n.lower(): n for n in disable_names()}
    wanted = [d.strip() for d in disable if d.strip()]
    unknown = [d for d in wanted if d.lower() not in valid]
    if unknown:
        raise PipelineError(
            f"--disable-pass: unknown name(s) {', '.join(unknown)}; "
            f"valid: {', '.join(disable_names())}"
        )
    return {valid[d.lower()] for d in wanted}


def _cleanup(ctx: PassContext, off: set[str]) -> list[Pass | FixedPoint]:
    passes: list[Pass | FixedPoint] = [c(ctx) for c in CLEANUP_PASSES if _pass_name(c) not in off]
    return [FixedPoint(passes, name="cleanup")] if passes else []


def _infer(ctx: PassContext, off: set[str]) -> list[Pass | FixedPoint]:
    return [] if _pass_name(InferShapes) in off else [InferShapes(ctx)]


def _fusions(ctx: PassContext, off: set[str]) -> list[Pass | FixedPoint]:
    if _pass_name(Fusions) in off:
        return []
    rules = [r for name, rs in families() if name not in off for r in rs]
    return [Fusions(ctx, RuleSet(rules))] if rules else []


def none_pipeline(ctx: PassContext | None = None, disable: Iterable[str] = ()) -> Pipeline:
    """No rewriting: only dtypes and shapes are inferred."""
    return _infer(ctx or PassContext(), _canonical(disable))


def basic_pipeline(ctx: PassContext | None = None, disable: Iterable[str] = ()) -> Pipeline:
    """Shape inference and the cleanup passes to a fixed point; no fusion."""
    ctx, off = ctx or PassContext(), _canonical(disable)
    return [*_infer(ctx, off), *_cleanup(ctx, off)]


def full_pipeline(ctx: PassContext | None = None, disable: Iterable[str] = ()) -> Pipeline:
    """``basic``, the fusions, cleanup, then the late passes and cleanup."""
    ctx, off = ctx or PassContext(), _canonical(disable)
    out: Pipeline = [*_infer(ctx, off), *_cleanup(ctx, off)]
    fusions = _fusions(ctx, off)
    if fusions:
        out += [*fusions, *_cleanup(ctx, off)]
    late = [cls(ctx) for cls in LATE_PASSES if _pass_name(cls) not in off]
    if late:
        out += [*late, *_cleanup(ctx, off)]
    return out


default_pipeline = full_pipeline

PIPELINES: dict[str, Callable[..., Pipeline]] = {
    "none": none_pipeline,
    "basic": basic_pipeline,
    "full": full_pipeline,
    "general": full_pipeline,
}
"""``--optimize`` level -> factory ``f(ctx: PassContext | None = None, disable=())``."""


def build_pipeline(
    level: str = "full", ctx: PassContext | None = None, disable: Iterable[str] = ()
) -> Pipeline:
    """The pipeline of ``level`` (an alias too) without the ``disable``d passes/families."""
    key = ALIASES.get(level, level)
    if key not in LEVELS:
        choices = ", ".join([*LEVELS, *ALIASES])
        raise PipelineError(f"unknown --optimize={level!r}: choose one of {choices}")
    return PIPELINES[key](ctx, disable)


def rule_stats(passes: Sequence[Pass | FixedPoint]) -> dict[str, dict[str, int]]:
    """Per fusion rule that matched: matched / rejected / trainable / fired, summed."""
    out: dict[str, dict[str, int]] = {}
    for p in passes:
        if isinstance(p, FixedPoint):
            nested = rule_stats(p.passes)
        elif isinstance(p, RulePass):
            nested = p.rule_stats()
        else:
            continue
        for name, counts in nested.items():
            acc = out.setdefault(name, dict.fromkeys(counts, 0))
            for k, n in counts.items():
                acc[k] = acc.get(k, 0) + n
    return out
