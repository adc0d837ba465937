"""CI floor of the ONNX backend node-test conformance run (benchmarks/onnx_conformance.py).

The whole suite runs (about 10 s on 2 cores). It fails when fewer cases pass than the
floor recorded in benchmarks/conformance_floor.json, or when any case is ``wrong``,
``crash`` or ``slow`` unless listed under ``known_failures`` there (each entry names
the owner and the fix). Raise the floor when coverage grows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import onnx_conformance as conf

FLOOR = Path(__file__).resolve().parent.parent / "benchmarks" / "conformance_floor.json"
BUGS = ("wrong", "crash", "slow")


@pytest.fixture(scope="module")
def results() -> list[conf.CaseResult]:
    return conf.run_cases(conf.collect_cases(), jobs=2)


@pytest.mark.slow
def test_pass_count_at_least_floor(results: list[conf.CaseResult]) -> None:
    floor = json.loads(FLOOR.read_text())
    counts = conf.summarize(results)
    assert len(results) >= floor["cases"], counts
    assert counts["pass"] >= floor["pass"], f"passes fell below the floor: {counts}"


@pytest.mark.slow
def test_no_wrong_or_crashing_case(results: list[conf.CaseResult]) -> None:
    known = json.loads(FLOOR.read_text()).get("known_failures", {})
    bad = [f"{r.status} {r.name}: {r.detail}" for r in results
           if r.status in BUGS and r.name not in known]  # fmt: skip
    assert not bad, "\n".join(bad)


@pytest.mark.slow
def test_every_failure_names_its_op(results: list[conf.CaseResult]) -> None:
    """An unsupported case is an explicit refusal saying what is not supported."""
    vague = [
        f"{r.name}: {r.detail}"
        for r in results
        if r.status == "unsupported" and "support" not in r.detail
    ]
    assert not vague, "\n".join(vague)


def test_compare_catches_differences() -> None:
    """The comparison the floor relies on: shapes, dtypes, NaN positions, tolerances."""
    a = np.array([1.0, np.nan, 3.0], np.float32)
    conf._compare("y", a.copy(), a, 1e-3, 1e-5, True)
    for got in (
        a.astype(np.float64),  # dtype
        a[:2],  # shape
        np.array([1.0, 2.0, 3.0], np.float32),  # NaN position
        np.array([1.0, np.nan, 3.01], np.float32),  # value beyond rtol
    ):
        with pytest.raises(conf._Mismatch):
            conf._compare("y", got, a, 1e-3, 1e-5, True)
    with pytest.raises(conf._Mismatch):
        conf._compare("y", np.array([1, 2]), np.array([1, 3]), 1e-3, 1e-5, True)
    conf._compare("y", np.zeros(3, np.float32), a, 1e-3, 1e-5, False)  # random ops


def test_case_op_labels() -> None:
    cases = {c.name: c for c in conf.collect_cases("test_sce_mean")}
    ops = conf.case_ops(list(cases.values()))
    assert ops["test_sce_mean"] == "SoftmaxCrossEntropyLoss"
    assert ops["test_sce_mean_expanded"] == "SoftmaxCrossEntropyLoss"


def _case(name: str):
    (case,) = [c for c in conf.collect_cases(name) if c.name == name]
    return case


def test_run_case_classifies() -> None:
    assert conf.run_case(_case("test_abs")).status == "pass"
    result = conf.run_case(_case("test_adagrad"))
    assert result.status == "unsupported" and "Adagrad" in result.detail
