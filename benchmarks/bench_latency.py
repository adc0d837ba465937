"""Executor latency side by side with onnxruntime (2 intra-op threads), same process.

    .venv/bin/python -m benchmarks.bench_latency [--models resnet50,mobilenet_v2,bert_base]
        [--runs 10] [--protocol blocks|alternate] [--profile] [--gemm] [--json out.json]

For each model: build it (random weights, seed 0), convert it with liteconv
(default pipeline) to a `.ms` in a temp folder, load it, then time
onnxruntime and the liteconv executor on the same inputs, one warm-up run
each. Prints median milliseconds and the ratio executor/onnxruntime (lower
is better), plus the cosine similarity of the outputs so a fast-but-wrong
run can't pass unnoticed.

Protocol. Both runtimes leave worker threads busy-waiting after a call
(onnxruntime's intra-op pool spins, OpenBLAS's threads poll for new work),
and on a 2-core machine those spinners steal the cores from whichever
runtime runs next: run-by-run alternation slows *both* sides by 2-3x and
makes the ratio meaningless. The default ``blocks`` protocol therefore
times rounds of consecutive runs of one runtime, with a short pause before
each block so the other runtime's threads go idle; ``alternate`` is the
old one-run-each alternation, kept for comparison.

OpenBLAS picks its GEMM kernels from ``OPENBLAS_CORETYPE`` when that is set
(e.g. ``Haswell`` = AVX2 on an AVX-512 machine, about half the peak); the
value in effect is printed with the results.
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


def _time_blocks(
    fns: list[Callable[[], object]], runs: int, block: int = 5, pause: float = 0.25
) -> list[list[float]]:
    """Seconds per call of each fn, in rounds of ``block`` calls after a pause."""
    times: list[list[float]] = [[] for _ in fns]
    while len(times[0]) < runs:
        n = min(block, runs - len(times[0]))
        for fn, acc in zip(fns, times, strict=True):
            time.sleep(pause)
            fn()  # re-warm caches after the pause; not timed
            for _ in range(n):
                t0 = time.perf_counter()
                fn()
                acc.append(time.perf_counter() - t0)
    return times


def _time_alternate(fns: list[Callable[[], object]], runs: int) -> list[list[float]]:
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for fn, acc in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    return times


def bench_one(
    name: str, runs: int, workdir: Path, protocol: str = "blocks", profile: bool = False
) -> dict:
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

    fns = [lambda: sess.run(None, feeds), lambda: model.run(feeds)]
    timer = _time_blocks if protocol == "blocks" else _time_alternate
    t_ort, t_exe = timer(fns, runs)
    ort_ms = statistics.median(t_ort) * 1e3
    exe_ms = statistics.median(t_exe) * 1e3
    row = {
        "model": name,
        "runs": runs,
        "protocol": protocol,
        "onnxruntime_ms": round(ort_ms, 3),
        "executor_ms": round(exe_ms, 3),
        "ratio": round(exe_ms / ort_ms, 2),
        "cosine": round(cos, 6),
        "nodes": len(model.graph),
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", "auto"),
    }
    if profile:
        from converter.executor.runtime import Runtime

        rt = Runtime(model.graph, profile=True)
        for _ in range(3):
            rt.run(feeds)
        row["profile"] = rt.profile_table()
    return row


def gemm_throughput(m: int = 128, k: int = 768, n: int = 3072, runs: int = 50) -> dict:
    """GFLOP/s of one BERT-sized float32 GEMM in NumPy (its BLAS) and in onnxruntime
    (2 threads): the ceiling the executor's MatMuls and convs run under."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    a = rng.random((m, k), np.float32)
    b = rng.random((k, n), np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [m, n])],
        [numpy_helper.from_array(b, "b")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    t_np, t_ort = _time_blocks([lambda: a @ b, lambda: sess.run(None, {"a": a})], runs)
    flops = 2.0 * m * k * n
    return {
        "shape": [m, k, n],
        "numpy_gflops": round(flops / statistics.median(t_np) / 1e9, 1),
        "onnxruntime_gflops": round(flops / statistics.median(t_ort) / 1e9, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet50,mobilenet_v2,bert_base")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--protocol", choices=["blocks", "alternate"], default="blocks")
    ap.add_argument("--profile", action="store_true", help="print seconds per op (3 runs)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--gemm", action="store_true", help="also print one GEMM's GFLOP/s")
    args = ap.parse_args()
    if args.gemm:
        g = gemm_throughput()
        print(
            f"GEMM {g['shape']}: NumPy {g['numpy_gflops']} GFLOP/s, onnxruntime "
            f"{g['onnxruntime_gflops']} GFLOP/s "
            f"(OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'auto')})",
            flush=True,
        )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            row = bench_one(name, args.runs, Path(tmp), args.protocol, args.profile)
            rows.append(row)
            print(
                f"{row['model']:<16} onnxruntime {row['onnxruntime_ms']:>9.2f} ms   "
                f"executor {row['executor_ms']:>9.2f} ms   ratio {row['ratio']:>6.2f}x   "
                f"cosine {row['cosine']:.6f}   (median of {row['runs']}, {args.protocol}, "
                f"{os.cpu_count()} cpus, OPENBLAS_CORETYPE={row['openblas_coretype']})",
                flush=True,
            )
            if args.profile:
                print(row["profile"], flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
