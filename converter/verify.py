"""Numerical verification: the source model in its own runtime vs the `.ms` in the executor.

Both run on the same inputs (seeded random data respecting dtypes and pinned
shapes, or user data from an ``.npz``). Per output we report:

- ``cosine``: cosine similarity of the flattened outputs (1.0 when both are all zero);
- ``max_abs``: max |out - ref|;
- ``max_rel``: max |out - ref| / max(|ref|, 1e-6) — zeros in ``ref`` don't blow it up;
- ``mean_bias``: mean(out - ref), signed: a systematic drift shows here;
- ``mean_error_pct``: MindSpore Lite benchmark's "mean bias" in percent — the mean,
  over elements outside ``1e-8 + 1e-5·|ref|``, of the relative error (the absolute
  error where ref is 0) — what ``--accuracyThreshold`` gates on.

A tolerance broken on any output, a shape mismatch or a NaN/Inf that the
reference doesn't have fails the verification. The cosine gate is waived on an
output that is all about zero (every reference value within 1e-3 of 0) and
within ``Thresholds.near_zero`` (1e-6) of the reference everywhere: cosine is
scale-free, so there it measures rounding noise (a detector's probability map
of a blank image, say — onnxruntime's own Sigmoid is off by 50 % relative
below -16).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from converter.errors import ConvertError, UsageError
from converter.reference import NAMES as REFERENCE_NAMES
from ir import DataType, Graph, Value

__all__ = [
    "OutputMetrics",
    "Thresholds",
    "VerifyReport",
    "compare_outputs",
    "make_inputs",
    "run_reference",
    "symbolic_dims_note",
]

_NEAR_ZERO_SCALE = 1e-3  # outputs whose reference stays this close to 0 are "about zero"
_MS_RTOL = 1e-5
_MS_ATOL = 1e-8


@dataclass
class Thresholds:
    """What counts as a pass. ``None`` disables a check."""

    cosine: float | None = 0.9999
    accuracy_pct: float | None = None  # MindSpore's --accuracyThreshold (mean bias %)
    atol: float | None = None
    rtol: float | None = None
    near_zero: float | None = 1e-6  # max |out-ref| at or below which cosine is not checked


@dataclass
class OutputMetrics:
    name: str
    shape: list[int]
    ref_shape: list[int]
    dtype: str
    cosine: float
    max_abs: float
    max_rel: float
    mean_bias: float
    mean_error_pct: float
    nan_inf: bool
    passed: bool
    failures: list[str] = field(default_factory=list)
    note: str = ""


@dataclass
class VerifyReport:
    source: str
    model: str
    inputs: dict[str, dict[str, Any]]
    outputs: list[OutputMetrics]
    thresholds: Thresholds
    passed: bool
    reference: str = ""

    def to_dict(self) -> dict[str, Any]:
        return json.loads(self.to_json())

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=_json_default)

    def lines(self) -> list[str]:
        """Human-readable table, one line per output."""
        out = [
            f"{'output':<28} {'cosine':>10} {'max_abs':>10} {'max_rel':>10} "
            f"{'mean_bias':>11} {'bias%':>8}  result"
        ]
        for m in self.outputs:
            verdict = "FAIL: " + "; ".join(m.failures) if not m.passed else "ok"
            verdict += f" ({m.note})" if m.note else ""
            out.append(
                f"{m.name[:28]:<28} {m.cosine:>10.6f} {m.max_abs:>10.3g} {m.max_rel:>10.3g} "
                f"{m.mean_bias:>11.3g} {m.mean_error_pct:>8.3g}  {verdict}"
            )
        return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    raise TypeError(type(obj).__name__)


# -- inputs -------------------------------------------------------------------
def make_inputs(
    inputs: list[Value], seed: int = 0, feeds: Mapping[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Seeded random data for every graph input not given in ``feeds``.

    Floats are standard normal, signed integers uniform in [0, 10), bools
    random; dims that are still symbolic become 1 (pin them with --inputShape;
    :func:`symbolic_dims_note` says which were filled). A name in ``feeds`` that
    is not an input is a :class:`UsageError`.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    given = dict(feeds or {})
    for v in inputs:
        if v.name in given:
            arr = np.asarray(given.pop(v.name))
            if v.dtype not in (DataType.UNDEFINED, DataType.STRING) and arr.dtype != v.dtype.numpy:
                arr = arr.astype(v.dtype.numpy)
            out[v.name] = arr
            continue
        shape = tuple(d if isinstance(d, int) else 1 for d in (v.shape or ()))
        dt = v.dtype
        if dt == DataType.BOOL:
            arr = rng.random(shape) < 0.5
        elif dt.is_integer:
            arr = rng.integers(0, 10, size=shape).astype(dt.numpy)
        elif dt.is_float or dt == DataType.UNDEFINED:
            arr = rng.standard_normal(shape).astype(
                np.float32 if dt == DataType.UNDEFINED else dt.numpy
            )
        else:
            raise UsageError(
                f"cannot generate random data for input {v.name!r} of type {dt.name}: "
                "pass data with --inputs"
            )
        out[v.name] = arr
    if given:
        names = ", ".join(v.name for v in inputs)
        raise UsageError(f"input data has unknown name(s) {sorted(given)}; model inputs: {names}")
    return out


def symbolic_dims_note(inputs: list[Value], feeds: Mapping[str, np.ndarray]) -> str:
    """Which generated inputs had symbolic dims set to 1, as a hint for an error message."""
    filled = [
        f"{v.name} {list(feeds[v.name].shape)}"
        for v in inputs
        if v.name in feeds and any(not isinstance(d, int) for d in (v.shape or ()))
    ]
    if not filled:
        return ""
    return (
        f"; symbolic dims were set to 1 ({', '.join(filled)}): pin real sizes with "
        "--inputShape or pass data with --inputs"
    )


# -- reference runtimes ---------------------------------------------------------
def run_reference(
    source: str | Path, fmk: str, feeds: Mapping[str, np.ndarray], threads: int = 2, **options: Any
) -> dict[str, np.ndarray]:
    """Run the source model in its own framework's runtime (converter/reference/)."""
    from converter.reference import run_reference as run

    return run(source, fmk, feeds, threads=threads, **options)


# -- metrics -----------------------------------------------------------------------
def output_metrics(name: str, got: np.ndarray, ref: np.ndarray, th: Thresholds) -> OutputMetrics:
    got = np.asarray(got)
    ref = np.asarray(ref)
    failures: list[str] = []
    same_shape = got.shape == ref.shape
    if not same_shape:
        failures.append(f"shape {list(got.shape)} != reference {list(ref.shape)}")
    numeric = got.dtype.kind in "biufc" and ref.dtype.kind in "biufc"
    if not numeric:
        equal = same_shape and bool(np.all(got == ref))
        if not equal:
            failures.append("values differ")
        return OutputMetrics(
            name, list(got.shape), list(ref.shape), str(got.dtype),
            1.0 if equal else 0.0, 0.0, 0.0, 0.0, 0.0, False, not failures, failures,
        )  # fmt: skip
    g = got.astype(np.float64).reshape(-1) if same_shape else np.zeros(0)
    r = ref.astype(np.float64).reshape(-1) if same_shape else np.zeros(0)
    nan_inf = bool(np.any(~np.isfinite(g)) and not np.any(~np.isfinite(r)))
    if nan_inf:
        failures.append("NaN/Inf in output but not in reference")
    finite = np.isfinite(g) & np.isfinite(r)
    both_nan = np.isnan(g) & np.isnan(r)
    mismatch_nonfinite = ~finite & ~both_nan & ~(g == r)
    if same_shape and np.any(mismatch_nonfinite) and not nan_inf:
        failures.append("NaN/Inf positions differ from the reference")
    g_f, r_f = g[finite], r[finite]
    diff = g_f - r_f
    max_abs = float(np.max(np.abs(diff))) if diff.size else 0.0
    max_rel = float(np.max(np.abs(diff) / np.maximum(np.abs(r_f), 1e-6))) if diff.size else 0.0
    mean_bias = float(np.mean(diff)) if diff.size else 0.0
    cosine = _cosine(g_f, r_f)
    mean_err = _ms_mean_error(g_f, r_f) * 100.0
    note = ""
    if same_shape:
        if th.cosine is not None and cosine < th.cosine:
            tiny = diff.size and float(np.max(np.abs(r_f))) <= _NEAR_ZERO_SCALE
            if th.near_zero is not None and tiny and max_abs <= th.near_zero and not nan_inf:
                note = f"cosine not checked: |out-ref| <= {th.near_zero:g} everywhere"
            else:
                failures.append(f"cosine {cosine:.6f} < {th.cosine}")
        if th.accuracy_pct is not None and mean_err > th.accuracy_pct:
            failures.append(f"mean bias {mean_err:.4g}% > {th.accuracy_pct}%")
        if th.atol is not None or th.rtol is not None:
            atol = th.atol or 0.0
            rtol = th.rtol or 0.0
            if diff.size and np.any(np.abs(diff) > atol + rtol * np.abs(r_f)):
                failures.append(f"|out-ref| > {atol} + {rtol}*|ref|")
    return OutputMetrics(
        name=name,
        shape=list(got.shape),
        ref_shape=list(ref.shape),
        dtype=str(got.dtype),
        cosine=cosine,
        max_abs=max_abs,
        max_rel=max_rel,
        mean_bias=mean_bias,
        mean_error_pct=mean_err,
        nan_inf=nan_inf,
        passed=not failures,
        failures=failures,
        note=note,
    )


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    if a.size == 0:
        return 1.0
    na = float(np.linalg.norm(a))
    nb = float(np.linalg.norm(b))
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def _ms_mean_error(got: np.ndarray, ref: np.ndarray) -> float:
    err = np.abs(got - ref)
    outside = err > _MS_ATOL + _MS_RTOL * np.abs(ref)
    if not np.any(outside):
        return 0.0
    e, r = err[outside], ref[outside]
    zero_ref = np.abs(r) < np.finfo(np.float32).eps
    rel = np.where(zero_ref, e, e / (np.abs(r) + np.finfo(np.float32).tiny))
    keep = ~zero_ref | (e > 1e-5)
    return float(np.mean(rel[keep])) if np.any(keep) else 0.0


def compare_outputs(
    got: Mapping[str, np.ndarray],
    ref: Mapping[str, np.ndarray],
    order: list[str],
    th: Thresholds,
) -> list[OutputMetrics]:
    """Metrics per output name in ``order``; a name missing on either side fails."""
    metrics = []
    for name in order:
        if name not in got or name not in ref:
            side = "converted model" if name not in got else "reference"
            metrics.append(
                OutputMetrics(
                    name, [], [], "", 0.0, math.inf, math.inf, math.inf, math.inf, False, False,
                    [f"output missing from the {side}"],
                )  # fmt: skip
            )
            continue
        metrics.append(output_metrics(name, got[name], ref[name], th))
    return metrics


def verify_graph(
    graph: Graph,
    source: str | Path,
    fmk: str,
    model_path: str | Path,
    th: Thresholds,
    feeds: Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
    **reference_options: Any,
) -> VerifyReport:
    """Run ``graph`` (read back from the .ms) and the source model; compare.

    ``reference_options`` go to the framework's reference runner (e.g.
    ``weight_file`` for Caffe).
    """
    from converter.executor.runtime import ExecutionError, Runtime

    inputs = make_inputs(graph.inputs, seed=seed, feeds=feeds)
    hint = symbolic_dims_note(graph.inputs, inputs)
    reference = REFERENCE_NAMES.get(fmk.upper(), fmk)
    try:
        ref = run_reference(source, fmk, inputs, **reference_options)
    except ConvertError as exc:
        raise type(exc)(f"{exc}{hint}") from exc
    except Exception as exc:  # noqa: BLE001 - the framework's own error, for the user
        raise ConvertError(
            f"the reference runtime ({reference}) failed on the verification inputs: "
            f"{_first_line(exc)}{hint}"
        ) from exc
    try:
        got = Runtime(graph).run(inputs)
    except ExecutionError as exc:
        raise ExecutionError(f"{exc}{hint}") from exc
    order = [v.name for v in graph.outputs]
    metrics = compare_outputs(got, ref, order, th)
    return VerifyReport(
        source=str(source),
        model=str(model_path),
        inputs={k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in inputs.items()},
        outputs=metrics,
        thresholds=th,
        passed=all(m.passed for m in metrics),
        reference=reference,
    )


def _first_line(exc: BaseException) -> str:
    """A framework exception as one short line (onnxruntime nests 'Status Message:' chains)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if "Status Message:" in text:
        node = text.split("Name:")[-1].split(" Status Message:")[0] if "Name:" in text else ""
        text = text.rsplit("Status Message:", 1)[1].strip()
        text = f"node {node.strip()}: {text}" if node else text
    return text if len(text) <= 300 else text[:297] + "..."
