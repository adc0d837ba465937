"""Executor latency side by side with onnxruntime (2 intra-op threads), same process.

    .venv/bin/python -m benchmarks.bench_latency [--models resnet50,mobilenet_v2,bert_base]
        [--runs 10] [--json out.json]

For each model: build it (random weights, seed 0), convert it with liteconv
(default pipeline) to a `.ms` in a temp folder, load it, then time
onnxruntime and the liteconv executor on the same inputs, alternating, with
one warm-up run each. Prints median milliseconds and the ratio
executor/onnxruntime (lower is better), plus the cosine similarity of the
outputs so a fast-but-wrong run can't pass unnoticed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from benchmarks import models as M

MODELS: dict[str, tuple[Callable[[], onnx.ModelProto], Callable[[], dict[str, np.ndarray]]]] = {
    "resnet50": (
        lambda: M.resnet(50),
        lambda: {"input": np.random.default_rng(0).standard_normal((1, 3, 224, 224), np.float32)},
    ),
    "mobilenet_v2": (
        lambda: M.mobilenet_v2(1.0),
        lambda: {"input": np.random.default_rng(0).standard_normal((1, 3, 224, 224), np.float32)},
    ),
    "bert_base": (
        lambda: M.bert_encoder(M.BertConfig()),
        lambda: {
            "input_ids": np.random.default_rng(0).integers(0, 30522, (1, 128)).astype(np.int64),
            "attention_mask": np.ones((1, 128), np.int64),
        },
    ),
    "bert_tiny": (
        lambda: M.bert_encoder(M.BertConfig.tiny()),
        lambda: {
            "input_ids": np.random.default_rng(0).integers(0, 100, (2, 16)).astype(np.int64),
            "attention_mask": np.ones((2, 16), np.int64),
        },
    ),
    "resnet14_small": (
        lambda: M.resnet(14, width=16, image=64, classes=10),
        lambda: {"input": np.random.default_rng(0).standard_normal((1, 3, 64, 64), np.float32)},
    ),
}


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def bench_one(name: str, runs: int, workdir: Path) -> dict:
    import onnxruntime as ort

    import converter

    build, feeds_fn = MODELS[name]
    src = workdir / f"{name}.onnx"
    onnx.save(build(), src)
    out = workdir / f"{name}.ms"
    converter.convert(src, fmk="ONNX", output=out)
    model = converter.load(out)
    feeds = feeds_fn()

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])

    ref = sess.run(None, feeds)
    got = model.run(feeds)
    cos = _cosine(np.asarray(list(got.values())[0]), ref[0])

    t_ort: list[float] = []
    t_exe: list[float] = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        t_ort.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        model.run(feeds)
        t_exe.append(time.perf_counter() - t0)
    ort_ms = statistics.median(t_ort) * 1e3
    exe_ms = statistics.median(t_exe) * 1e3
    return {
        "model": name,
        "runs": runs,
        "onnxruntime_ms": round(ort_ms, 3),
        "executor_ms": round(exe_ms, 3),
        "ratio": round(exe_ms / ort_ms, 2),
        "cosine": round(cos, 6),
        "nodes": len(model.graph),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet50,mobilenet_v2,bert_base")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            row = bench_one(name, args.runs, Path(tmp))
            rows.append(row)
            print(
                f"{row['model']:<16} onnxruntime {row['onnxruntime_ms']:>9.2f} ms   "
                f"executor {row['executor_ms']:>9.2f} ms   ratio {row['ratio']:>6.2f}x   "
                f"cosine {row['cosine']:.6f}   (median of {row['runs']}, {os.cpu_count()} cpus)",
                flush=True,
            )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
