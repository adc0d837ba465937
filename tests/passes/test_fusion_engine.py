"""The pattern-rewrite engine: matching, escape checks, check reasons, naming."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from pass_testing import Builder, check_pass

from ir import DataType
from passes.fusions.engine import (
    Const,
    Match,
    MatchResult,
    Op,
    Or,
    Rule,
    RulePass,
    RuleSet,
    Var,
)


def _neg_of_neg() -> Rule:
    """Neg(Neg(x)) -> Identity(x)."""
    return Rule("NegNeg", Op("Neg", Op("Neg", Var("x"))), lambda b, m: b.op("Identity", m["x"]))


def test_var_bound_twice_must_be_the_same_value() -> None:
    pattern = Op("Add", Var("x"), Var("x"))
    b = Builder()
    x, z = b.input("x", (2,)), b.input("z", (2,))
    same, other = b.op("Add", x, x), b.op("Add", x, z)
    assert list(pattern.match(same, {}))
    assert not list(pattern.match(other, {}))


def test_commute_and_or_try_every_arrangement() -> None:
    b = Builder()
    x = b.input("x", (2,))
    y = b.op("Mul", b.const(np.array(2.0, np.float32)), x)
    assert not list(Op("Mul", Var("x"), Const("k", 2.0)).match(y, {}))
    hits = list(Op("Mul", Var("x"), Const("k", 2.0), commute=True).match(y, {}))
    assert len(hits) == 1 and hits[0]["x"] is x
    alt = Or(Op("Add", Var("x"), Var("y")), Op("Mul", Var("x"), Const("k")))
    assert [h["k"].const.item() for h in alt.match(y, {})] == []  # x is the constant here
    assert len(list(Or(Op("Add", Var("a"), Var("b")), Op("Mul", Var("a"), Var("b"))).match(y, {})))


def test_const_value_tolerance_and_scalars_only() -> None:
    b = Builder()
    near = b.const(np.array(0.5000001, np.float32))
    vec = b.const(np.array([0.5, 0.5], np.float32))
    assert list(Const("h", 0.5).match(near, {}))
    assert not list(Const("h", 0.5).match(vec, {}))
    assert not list(Const("h", 0.6).match(near, {}))


def test_rewrite_keeps_output_names_and_numerics() -> None:
    b = Builder()
    x = b.input("x", (2, 3))
    y = b.op("Relu", b.op("Neg", b.op("Neg", x)))
    g = b.outputs(b.op("Neg", b.op("Neg", y)))
    name = g.outputs[0].name
    p = RulePass(RuleSet([_neg_of_neg()]))
    check_pass(g, p, modified=True, ops=["Identity", "Identity", "Relu"])
    assert g.outputs[0].name == name and p.counts == {"NegNeg": 2}


def test_escaping_intermediate_is_refused_with_a_reason(caplog: pytest.LogCaptureFixture) -> None:
    b = Builder()
    x = b.input("x", (2,))
    inner = b.op("Neg", x)
    g = b.outputs(b.op("Neg", inner), b.op("Abs", inner))
    with caplog.at_level(logging.DEBUG, logger="passes.fusions.engine"):
        assert not RulePass(RuleSet([_neg_of_neg()])).run(g)
    assert "also read by" in caplog.text


def test_check_failure_reason_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    def never(m: Match) -> MatchResult:
        return MatchResult.fail("not today")

    rule = Rule("Never", _neg_of_neg().pattern, _neg_of_neg().rewrite, never)
    b = Builder()
    x = b.input("x", (2,))
    g = b.outputs(b.op("Neg", b.op("Neg", x)))
    with caplog.at_level(logging.DEBUG, logger="passes.fusions.engine"):
        assert not RulePass(RuleSet([rule])).run(g)
    assert "not today" in caplog.text
    assert not MatchResult.fail("x") and MatchResult.success()


def test_match_never_reaches_into_an_enclosing_graph() -> None:
    """A body Neg reading an outer Neg: the pair spans two graphs and stays."""
    b = Builder()
    x = b.input("x", (2,))
    outer = b.op("Neg", x)
    body = Builder("body")
    body.input("i", (), DataType.INT64)
    keep = body.input("keep", (), DataType.BOOL)
    acc = body.input("acc", (2,))
    neg = body.op("Neg", outer)
    neg.name = "body_neg"
    inner = body.op("Add", acc, neg)
    inner.name = "body_add"
    body.outputs(body.op("Identity", keep), inner)
    y = b.op("Loop", b.const(np.array(2, np.int64)), None, x, body=body.graph)
    g = b.outputs(y)
    check_pass(g, RulePass(RuleSet([_neg_of_neg()])), modified=False)
