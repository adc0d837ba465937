"""ONNX operator conformance: the onnx package's backend node tests through liteconv.

Every case of ``onnx.backend.test.case.node.collect_testcases()`` is converted with
``converter.convert(model, fmk="ONNX", optimize="general")``, the written ``.ms`` is
loaded with ``converter.load`` and run on the case's inputs, and each output is compared
with the expected one: exact shape, exact dtype, NaN positions equal, values within the
case's rtol/atol but never tighter than rtol=1e-3, atol=1e-5 (integers, bools and
strings exactly). Cases of random ops (Bernoulli, RandomNormal*, RandomUniform*,
Multinomial) compare shapes and dtypes only.

Each case lands in one class:

- ``pass``: every output matches.
- ``unsupported``: liteconv refused it with its own error naming the op (parser
  UnsupportedModelError, executor UnsupportedKernel, ConvertError).
- ``non-tensor``: sequence/optional/map inputs, outputs or ops, which the IR does not
  model (unsupported by design, counted apart).
- ``wrong``: it ran but a number, shape or dtype differs (a bug).
- ``crash``: any other exception (a bug).
- ``slow``: took longer than the per-case time limit (20 s).

Usage::

    python -m benchmarks.onnx_conformance                # summary
    python -m benchmarks.onnx_conformance --json out.json  # per-case results too
    python -m benchmarks.onnx_conformance --write-docs   # regenerate docs/ops.md
    python -m benchmarks.onnx_conformance -k test_cast   # only names containing test_cast

Importable: :func:`run_cases` returns one :class:`CaseResult` per case.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing
import os
import re
import signal
import sys
import tempfile
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import onnx
from onnx import numpy_helper

__all__ = [
    "STATUSES",
    "CaseResult",
    "collect_cases",
    "main",
    "render_docs",
    "run_case",
    "run_cases",
    "summarize",
]

STATUSES = ("pass", "unsupported", "non-tensor", "wrong", "crash", "slow")
MIN_RTOL, MIN_ATOL = 1e-3, 1e-5
CASE_TIMEOUT_S = 20.0
COMMAND = "python -m benchmarks.onnx_conformance --write-docs"
DOCS_PATH = Path(__file__).resolve().parent.parent / "docs" / "ops.md"

RANDOM_OPS = frozenset(
    {
        "Bernoulli",
        "RandomNormal",
        "RandomNormalLike",
        "RandomUniform",
        "RandomUniformLike",
        "Multinomial",
    }
)
NON_TENSOR_OPS = frozenset(
    {
        "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceInsert",
        "SequenceLength", "SequenceMap", "SplitToSequence", "ConcatFromSequence", "Optional",
        "OptionalGetElement", "OptionalHasElement",
    }
)  # fmt: skip


@dataclass
class CaseResult:
    """The outcome of one backend test case."""

    name: str
    op: str  # the operator the case tests (expanded cases: the function op)
    opset: int  # default-domain opset of the case model
    status: str  # one of STATUSES
    dtypes: list[str] = field(default_factory=list)  # element types of the op's inputs
    detail: str = ""  # first line of the error or mismatch
    seconds: float = 0.0
    expanded: bool = False


def _low_floats() -> frozenset[np.dtype]:
    names = ("bfloat16", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz")
    return frozenset(np.dtype(getattr(ml_dtypes, n)) for n in names)


_LOW_FLOATS = _low_floats()


class _Timeout(Exception):
    pass


class _Mismatch(Exception):
    pass


# -- collecting cases ---------------------------------------------------------------------


def collect_cases(pattern: str | None = None) -> list[Any]:
    """The backend node-test cases (names containing ``pattern`` when given)."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    if pattern:
        cases = [c for c in cases if pattern in c.name]
    return sorted(cases, key=lambda c: c.name)


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


_OP_KEYS: dict[str, str] | None = None


def _op_keys() -> dict[str, str]:
    """Test-name spellings of every schema name: snake_case and lower case."""
    global _OP_KEYS
    if _OP_KEYS is None:
        keys: dict[str, str] = {}
        for schema in onnx.defs.get_all_schemas_with_history():
            keys.setdefault(_snake(schema.name), schema.name)
            keys.setdefault(schema.name.lower(), schema.name)
        _OP_KEYS = keys
    return _OP_KEYS


def _base_name(name: str) -> str:
    return re.sub(r"_expanded(_ver\d+)?$", "", name)


def _graph_ops(graph: onnx.GraphProto) -> Iterator[str]:
    for node in graph.node:
        yield node.op_type
        for a in node.attribute:
            subs = [a.g] if a.HasField("g") else []
            for sub in [*subs, *a.graphs]:
                yield from _graph_ops(sub)


def case_op(case: Any, known: dict[str, str] | None = None) -> str:
    """The operator a case tests: its single (non-Constant) node, else from its name.

    An expanded case (``<base>_expanded``) tests the op of its base case, looked up in
    ``known`` (name -> op of the other cases) when given.
    """
    ops = [n.op_type for n in case.model.graph.node if n.op_type != "Constant"]
    base = _base_name(case.name)
    if base != case.name and known and base in known:
        return known[base]
    if len(set(ops)) == 1 and base == case.name:
        return ops[0]
    stem = base[len("test_") :]
    best = ""
    for key in _op_keys():
        if (stem == key or stem.startswith(key + "_")) and len(key) > len(best):
            best = key
    if best:
        return _op_keys()[best]
    return ops[0] if ops else "Constant"


def _opset(model: onnx.ModelProto) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return 1


def _is_tensor(tp: onnx.TypeProto) -> bool:
    return tp.WhichOneof("value") == "tensor_type"


def _non_tensor(case: Any) -> bool:
    g = case.model.graph
    if not all(_is_tensor(vi.type) for vi in [*g.input, *g.output]):
        return True
    if NON_TENSOR_OPS & set(_graph_ops(g)):
        return True
    for inputs, outputs in case.data_sets:
        for x in [*inputs, *outputs]:
            if x is None or isinstance(x, (list, tuple, dict)):
                return True
    return False


def _as_array(x: Any) -> np.ndarray:
    if isinstance(x, onnx.TensorProto):
        return numpy_helper.to_array(x)
    return np.asarray(x)


def _dtype_names(case: Any) -> list[str]:
    from ir import DataType

    g = case.model.graph
    vis = list(g.input) or list(g.output)
    names = []
    for vi in vis:
        if _is_tensor(vi.type):
            with contextlib.suppress(ValueError):
                names.append(DataType(vi.type.tensor_type.elem_type).name.lower())
    return sorted(set(names))


# -- running one case ---------------------------------------------------------------------


def _unsupported_errors() -> tuple[type[BaseException], ...]:
    from converter.errors import ConvertError
    from converter.executor.registry import UnsupportedKernel
    from parsers.errors import InputShapeError, UnsupportedModelError

    return (UnsupportedModelError, UnsupportedKernel, ConvertError, InputShapeError)


def _first_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _compare(name: str, got: np.ndarray, want: np.ndarray, rtol: float, atol: float,
             values: bool) -> None:  # fmt: skip
    if got.shape != want.shape:
        raise _Mismatch(f"output {name!r}: shape {list(got.shape)} != {list(want.shape)}")
    if want.dtype == object or want.dtype.kind in "US":
        if got.dtype != object and got.dtype.kind not in "US":
            raise _Mismatch(f"output {name!r}: dtype {got.dtype} != strings")
        if values and [str(v) for v in got.flat] != [str(v) for v in want.flat]:
            raise _Mismatch(f"output {name!r}: strings differ")
        return
    if got.dtype != want.dtype:
        raise _Mismatch(f"output {name!r}: dtype {got.dtype} != {want.dtype}")
    if not values or want.size == 0:
        return
    if want.dtype.kind in "biu" or want.dtype == np.bool_:
        bad = got != want
        if np.any(bad):
            raise _Mismatch(f"output {name!r}: {int(bad.sum())}/{want.size} elements differ")
        return
    g = got.astype(np.complex128 if want.dtype.kind == "c" else np.float64)
    w = want.astype(g.dtype)
    nan_g, nan_w = np.isnan(g), np.isnan(w)
    if np.any(nan_g != nan_w):
        raise _Mismatch(f"output {name!r}: NaN positions differ")
    ok = np.isclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
    if not np.all(ok):
        err = np.abs(g - w)[~ok]
        raise _Mismatch(
            f"output {name!r}: {int((~ok).sum())}/{want.size} elements differ "
            f"(max abs err {float(np.max(err)):.3g})"
        )


def _execute(case: Any, workdir: Path) -> None:
    """Convert, load, run and compare; raises on any difference."""
    import converter

    model_path = workdir / f"{case.name}.onnx"
    onnx.save(case.model, str(model_path))
    out = workdir / f"{case.name}.ms"
    converter.convert(model_path, fmk="ONNX", output=out, optimize="general")
    model = converter.load(out)
    g = case.model.graph
    init = {t.name for t in g.initializer}
    in_names = [vi.name for vi in g.input if vi.name not in init]
    out_names = [vi.name for vi in g.output]
    values = not _is_random(g)
    atol = max(case.atol, MIN_ATOL)
    for inputs, outputs in case.data_sets:
        feeds = {n: _as_array(x) for n, x in zip(in_names, inputs, strict=False)}
        with np.errstate(all="ignore"):
            got = model.run(feeds)
        for n, want in zip(out_names, outputs, strict=True):
            if n not in got:
                raise _Mismatch(f"output {n!r} missing")
            want_arr = _as_array(want)
            rtol = max(case.rtol, MIN_RTOL, _ulp_rtol(want_arr.dtype))
            _compare(n, np.asarray(got[n]), want_arr, rtol, atol, values)


def _is_random(graph: onnx.GraphProto) -> bool:
    """Random ops, and Dropout given a training_mode input (random masks)."""
    if RANDOM_OPS & set(_graph_ops(graph)):
        return True
    return any(n.op_type == "Dropout" and len(n.input) > 2 and n.input[2] for n in graph.node)


def _ulp_rtol(dtype: np.dtype) -> float:
    """2 ulps for floats narrower than float32 (0 otherwise).

    liteconv computes float16/bfloat16/float8 ops in float32 and rounds once, where the
    expected outputs of expanded cases round after every step: they may differ by an
    ulp or two with both correct.
    """
    if dtype.kind != "f" and dtype not in _LOW_FLOATS:
        return 0.0
    if dtype.itemsize >= 4:
        return 0.0
    return 2.0 * float(ml_dtypes.finfo(dtype).eps)


def _alarm(signum: int, frame: Any) -> None:
    raise _Timeout()


def run_case(case: Any, timeout: float = CASE_TIMEOUT_S, op: str | None = None) -> CaseResult:
    """Run one case and classify it (never raises); ``op`` overrides :func:`case_op`."""
    result = CaseResult(
        name=case.name,
        op=op or case_op(case),
        opset=_opset(case.model),
        status="pass",
        dtypes=_dtype_names(case),
        expanded="_expanded" in case.name,
    )
    if _non_tensor(case):
        result.status = "non-tensor"
        return result
    use_alarm = timeout > 0 and hasattr(signal, "setitimer")
    t0 = time.perf_counter()
    old = signal.signal(signal.SIGALRM, _alarm) if use_alarm else None
    try:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, timeout)
        with tempfile.TemporaryDirectory(prefix="liteconv_conf_") as tmp:
            _execute(case, Path(tmp))
    except _Timeout:
        result.status, result.detail = "slow", f"over {timeout:g} s"
    except _Mismatch as exc:
        result.status, result.detail = "wrong", str(exc)
    except _unsupported_errors() as exc:
        result.status, result.detail = "unsupported", _first_line(exc)
    except Exception as exc:  # noqa: BLE001 - every other failure is a bug to report
        result.status, result.detail = "crash", _first_line(exc)
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        result.seconds = round(time.perf_counter() - t0, 3)
    return result


# -- running many -------------------------------------------------------------------------

_POOL_CASES: dict[str, Any] = {}


def _pool_init() -> None:
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")


def _pool_run(name: str, timeout: float, op: str) -> CaseResult:
    return run_case(_POOL_CASES[name], timeout, op)


def case_ops(cases: Sequence[Any]) -> dict[str, str]:
    """Name -> tested op for every case (expanded cases take their base case's op)."""
    plain = {c.name: case_op(c) for c in cases if _base_name(c.name) == c.name}
    return {c.name: plain.get(c.name) or case_op(c, plain) for c in cases}


def run_cases(
    cases: Sequence[Any], jobs: int = 2, timeout: float = CASE_TIMEOUT_S
) -> list[CaseResult]:
    """Run ``cases`` (``jobs`` worker processes when > 1), results in case order.

    Workers are forked (they inherit the collected cases); if one dies, the cases it
    left undone run in this process.
    """
    results: dict[str, CaseResult] = {}
    ops = case_ops(cases)
    if jobs > 1 and "fork" in multiprocessing.get_all_start_methods():
        _POOL_CASES.clear()
        _POOL_CASES.update({c.name: c for c in cases})
        ctx = multiprocessing.get_context("fork")
        try:
            with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_pool_init) as pool:
                futures = {
                    c.name: pool.submit(_pool_run, c.name, timeout, ops[c.name]) for c in cases
                }
                for name, fut in futures.items():
                    with contextlib.suppress(BrokenProcessPool):
                        results[name] = fut.result()
        except BrokenProcessPool:
            pass
        finally:
            _POOL_CASES.clear()
    for case in cases:
        if case.name not in results:
            results[case.name] = run_case(case, timeout, ops[case.name])
    return [results[c.name] for c in cases]


def summarize(results: Iterable[CaseResult]) -> dict[str, int]:
    counts = Counter(r.status for r in results)
    return {s: counts.get(s, 0) for s in STATUSES}


# -- docs ---------------------------------------------------------------------------------


def _opset_range(values: Iterable[int]) -> str:
    v = sorted(set(values))
    if not v:
        return "-"
    return str(v[0]) if v[0] == v[-1] else f"{v[0]}-{v[-1]}"


def render_docs(results: Sequence[CaseResult]) -> str:
    """docs/ops.md: totals, then one row per operator."""
    counts = summarize(results)
    total = len(results)
    lines = [
        "# ONNX operator coverage",
        "",
        "Generated by `benchmarks/onnx_conformance.py`; do not edit by hand. Command:",
        "",
        "```",
        COMMAND,
        "```",
        "",
        f"Source: the backend node tests of onnx {onnx.__version__} "
        f"(`onnx.backend.test.case.node.collect_testcases()`, {total} cases). Each case is",
        'converted to `.ms` (`optimize="general"`), run by the bundled executor and compared',
        f"with the expected outputs (exact shapes and dtypes, rtol >= {MIN_RTOL:g}, "
        f"atol >= {MIN_ATOL:g}).",
        "",
        "| result | cases |",
        "|---|---:|",
    ]
    lines += [f"| {s} | {counts[s]} |" for s in STATUSES]
    lines += [
        "",
        "`non-tensor`: sequences, optionals and maps, which the IR does not model. "
        "`unsupported`: refused",
        "with an error naming the op. `wrong`/`crash`/`slow` are bugs (CI keeps them at 0).",
        "Expanded cases (`*_expanded`) test an op through its function body and count under",
        "that op. Opsets and dtypes are those of the passing cases.",
        "",
        "| op | passed / cases | opsets passing | dtypes passing | other results |",
        "|---|---:|---|---|---|",
    ]
    by_op: dict[str, list[CaseResult]] = defaultdict(list)
    for r in results:
        by_op[r.op].append(r)
    for op_name in sorted(by_op, key=str.lower):
        rs = by_op[op_name]
        ok = [r for r in rs if r.status == "pass"]
        dtypes = sorted({d for r in ok for d in r.dtypes})
        other = Counter(r.status for r in rs if r.status != "pass")
        other_text = ", ".join(f"{k} {v}" for k, v in sorted(other.items())) or ""
        lines.append(
            f"| {op_name} | {len(ok)} / {len(rs)} | {_opset_range(r.opset for r in ok)} | "
            f"{', '.join(dtypes) or '-'} | {other_text} |"
        )
    return "\n".join(lines) + "\n"


# -- command line -------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", dest="pattern", help="only cases whose name contains this")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--timeout", type=float, default=CASE_TIMEOUT_S, help="seconds per case")
    parser.add_argument("--json", dest="json_path", help="write per-case results here")
    parser.add_argument("--write-docs", action="store_true", help="regenerate docs/ops.md")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every failing case")
    args = parser.parse_args(argv)

    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    cases = collect_cases(args.pattern)
    results = run_cases(cases, jobs=args.jobs, timeout=args.timeout)
    elapsed = time.perf_counter() - t0
    counts = summarize(results)
    if args.verbose:
        for r in results:
            if r.status not in ("pass", "non-tensor"):
                print(f"{r.status:12s} {r.name} [{r.op}]: {r.detail}")
    print(
        f"{len(results)} cases in {elapsed:.0f}s: "
        + ", ".join(f"{s} {counts[s]}" for s in STATUSES)
    )
    if args.json_path:
        Path(args.json_path).write_text(json.dumps([asdict(r) for r in results], indent=1))
    if args.write_docs:
        if args.pattern:
            print("--write-docs needs the full run (no -k)", file=sys.stderr)
            return 2
        DOCS_PATH.write_text(render_docs(results))
        print(f"wrote {os.path.relpath(DOCS_PATH)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
