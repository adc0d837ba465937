"""Graph fusions: pattern rules that turn op chains into fewer, bigger ops.

Each module holds one rule family and exports ``rules`` (a :class:`RuleSet`);
:data:`DEFAULT_RULES` assembles them in the order they are tried at an anchor
node. Recognition rules (GELU, Swish/HardSwish, LayerNorm) come first so that
what they produce can be absorbed by the conv/matmul fusions in a later round.
"""

from __future__ import annotations

from passes.base import PassContext
from passes.fusions import (
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
from passes.fusions.engine import MatchResult, Rule, RulePass, RuleSet

__all__ = ["DEFAULT_RULES", "Fusions", "MatchResult", "Rule", "RulePass", "RuleSet"]

DEFAULT_RULES: RuleSet = (
    gelu.rules + activation.rules + activation_extra.rules + normalization.rules
    + layernorm.rules + gemm.rules + pad.rules + conv.rules + matmul.rules
    + attention.rules + reshape.rules + rnn.rules
)
"""Every fusion rule, in trial order. (Binary + activation, :mod:`passes.fusions.binary`,
runs later, as its own pass.)"""


class Fusions(RulePass):
    """The default fusions (``ctx.options["fuse_activations"]``: "mappable" or "all")."""

    name = "Fusions"

    def __init__(self, ctx: PassContext | None = None, rules: RuleSet | None = None) -> None:
        super().__init__(rules or DEFAULT_RULES, ctx)
