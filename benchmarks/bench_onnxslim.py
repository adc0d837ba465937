"""liteconv's optimizer side by side with onnxslim: node counts and conversion time.

    .venv/bin/python -m benchmarks.bench_onnxslim [--small] [--models a,b] [--json out.json]

For each model (built by ``benchmarks.models`` / ``benchmarks.models_zoo``):

- ``onnx``: nodes of the source ONNX; ``onnxslim``: nodes of
  ``onnxslim.slim(model)`` (default settings); ``liteconv``: nodes of the
  ``.ms`` written with ``--optimize full`` (all counts include subgraph nodes);
- ``lower``: ``1 - liteconv / onnxslim`` (how much smaller liteconv's graph is);
- ``cosine``: the lowest output cosine of ``convert --verify`` (the ``.ms`` run
  by the executor against onnxruntime on seeded random inputs); ``verified``
  when every output reaches 0.9999;
- ``full_s`` / ``basic_s``: CPU seconds of a whole ``convert`` (parse,
  optimize, write) at ``--optimize full`` and ``basic``, best of ``--repeat``
  interleaved runs, and their ratio (CPU time: wall time on a shared machine
  measures the neighbours; ``full_wall_s`` / ``basic_wall_s`` are in the JSON).

``--small`` builds reduced sizes (seconds in all; what the slow test runs).
Node counts compare graphs in different vocabularies: onnxslim must stay in
standard ONNX, liteconv may use MindSpore Lite's fused ops (ConvAct,
MatMulAct, LayerNormalization, ...); both count one node per kernel launch.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import onnx

from benchmarks import models as M
from benchmarks import models_zoo as Z

__all__ = ["MODELS", "SMALL", "bench_model", "count_onnx_nodes", "main", "run"]

Build = Callable[[], onnx.ModelProto]

MODELS: dict[str, Build] = {
    "resnet50": lambda: M.resnet(50),
    "mobilenet_v2": lambda: M.mobilenet_v2(1.0),
    "bert_4l": lambda: M.bert_encoder(M.BertConfig(layers=4)),
    "lstm_tagger": lambda: M.lstm_tagger(),
    "yolo_fpn": lambda: Z.yolo_fpn(),
    "ocr_recognizer": lambda: Z.ocr_recognizer(),
    "efficientnet_b0": lambda: Z.efficientnet(),
    "unet": lambda: Z.unet(),
}
"""Benchmark models at their real sizes (BERT: base width, 4 of its 12 layers)."""

SMALL: dict[str, Build] = {
    "resnet50": lambda: M.resnet(14, width=8, image=32, classes=10),
    "mobilenet_v2": lambda: M.mobilenet_v2(0.35, image=32, classes=10, stages=3),
    "bert_4l": lambda: M.bert_encoder(M.BertConfig.tiny()),
    "lstm_tagger": lambda: M.lstm_tagger(),
    "yolo_fpn": lambda: Z.yolo_fpn(image=64, width=8, classes=4),
    "ocr_recognizer": lambda: Z.ocr_recognizer(hidden=32, width=32),
    "efficientnet_b0": lambda: Z.efficientnet(image=32, classes=10, stages=3),
    "unet": lambda: Z.unet(image=32, base=8, depth=2),
}
"""The same architectures, reduced so that the whole table takes seconds."""


def _all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)
            for g in attr.graphs:
                yield from _all_nodes(g)


def count_onnx_nodes(model: onnx.ModelProto) -> int:
    """Nodes of the main graph and of every subgraph."""
    return sum(1 for _ in _all_nodes(model.graph))


def _slim(model: onnx.ModelProto) -> tuple[onnx.ModelProto, float]:
    import onnxslim

    start = time.perf_counter()
    slim = onnxslim.slim(model)
    return slim, time.perf_counter() - start


def _convert_seconds(src: Path, work: Path, repeat: int) -> dict[str, dict[str, float]]:
    """Best wall and CPU seconds of a whole ``convert`` per level, runs interleaved."""
    import converter

    best = {lvl: {"wall": float("inf"), "cpu": float("inf")} for lvl in ("full", "basic")}
    for _ in range(max(1, repeat)):
        for level, b in best.items():
            # collect the previous run's graph (reference cycles holding its weights)
            # outside the timing, so neither level pays for the other's garbage
            gc.collect()
            wall, cpu = time.perf_counter(), time.process_time()
            converter.convert(src, output=work / f"{src.stem}_{level}.ms", optimize=level)
            b["wall"] = min(b["wall"], time.perf_counter() - wall)
            b["cpu"] = min(b["cpu"], time.process_time() - cpu)
    return best


def bench_model(name: str, build: Build, work: Path, repeat: int = 3) -> dict[str, Any]:
    """One table row (see the module docstring)."""
    import converter

    model = build()
    src = work / f"{name}.onnx"
    onnx.save(model, src)
    slim, slim_s = _slim(onnx.load(src))
    r = converter.convert(
        src, output=work / f"{name}.ms", optimize="full", verify=True, raise_on_mismatch=False
    )
    assert r.verify is not None
    cosine = min(m.cosine for m in r.verify.outputs)
    slim_n = count_onnx_nodes(slim)
    t = _convert_seconds(src, work, repeat)
    return {
        "onnx": count_onnx_nodes(model),
        "onnxslim": slim_n,
        "liteconv": r.nodes_after,
        "lower": 1.0 - r.nodes_after / slim_n,
        "cosine": float(cosine),
        "verified": bool(r.verify.passed),
        "onnxslim_s": slim_s,
        "full_s": t["full"]["cpu"],
        "basic_s": t["basic"]["cpu"],
        "full_over_basic": t["full"]["cpu"] / t["basic"]["cpu"],
        "full_wall_s": t["full"]["wall"],
        "basic_wall_s": t["basic"]["wall"],
    }


def run(names: list[str] | None = None, small: bool = False, repeat: int = 3) -> dict[str, Any]:
    """Rows per model plus a ``summary`` (mean reduction, totals, worst time ratio)."""
    table = SMALL if small else MODELS
    names = names or list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise SystemExit(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(table)}")
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            rows[name] = bench_model(name, table[name], Path(tmp), repeat)
    slim_total = sum(r["onnxslim"] for r in rows.values())
    lite_total = sum(r["liteconv"] for r in rows.values())
    summary = {
        "models": len(rows),
        "mean_lower": sum(r["lower"] for r in rows.values()) / len(rows),
        "total_lower": 1.0 - lite_total / slim_total,
        "lower_on_every_model": all(r["liteconv"] < r["onnxslim"] for r in rows.values()),
        "all_verified": all(r["verified"] for r in rows.values()),
        "max_full_over_basic": max(r["full_over_basic"] for r in rows.values()),
    }
    return {"small": small, "rows": rows, "summary": summary}


def format_table(result: dict[str, Any]) -> str:
    head = (
        f"{'model':<16} {'onnx':>5} {'onnxslim':>8} {'liteconv':>8} {'lower':>6} "
        f"{'cosine':>9} {'full s':>7} {'basic s':>7} {'ratio':>5}"  # CPU seconds
    )
    lines = [head, "-" * len(head)]
    for name, r in result["rows"].items():
        lines.append(
            f"{name:<16} {r['onnx']:>5} {r['onnxslim']:>8} {r['liteconv']:>8} "
            f"{r['lower']:>6.1%} {r['cosine']:>9.6f} {r['full_s']:>7.3f} {r['basic_s']:>7.3f} "
            f"{r['full_over_basic']:>5.2f}"
        )
    s = result["summary"]
    lines.append("-" * len(head))
    lines.append(
        f"mean reduction vs onnxslim {s['mean_lower']:.1%} (total nodes {s['total_lower']:.1%}); "
        f"lower on every model: {s['lower_on_every_model']}; all verified: {s['all_verified']}; "
        f"worst full/basic time {s['max_full_over_basic']:.2f}x"
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="reduced model sizes")
    ap.add_argument("--models", default=None, help="comma-separated subset")
    ap.add_argument("--repeat", type=int, default=3, help="timing runs per level (best kept)")
    ap.add_argument("--json", default=None, help="write the result as JSON")
    args = ap.parse_args()
    names = [n.strip() for n in args.models.split(",")] if args.models else None
    result = run(names, args.small, args.repeat)
    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
