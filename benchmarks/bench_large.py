"""Large models: conversion memory and time, and a model over FlatBuffers' 2 GB limit.

    .venv/bin/python -m benchmarks.bench_large bert  [--json out.json]
    .venv/bin/python -m benchmarks.bench_large huge  [--gib 2.2] [--json out.json]

``bert``: a BERT-base-sized encoder (12 layers, hidden 768, vocab 30522:
about 440 MB of float32 weights, random) saved as one .onnx. The conversion
runs in a child process so its peak RSS (VmHWM, imports included) is its own; reported as a
multiple of the file size, next to the conversion time and onnxruntime's
session-creation time on the same file.

``huge``: a stack of MatMul layers with more than 2 GiB of float32 weights,
saved as ONNX with external data (generated here, never committed). It is
converted (large tensors go to the .ms side file through Tensor.externalData),
run in the executor, and compared with onnxruntime.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from benchmarks import models as M

# VmHWM is this process's own peak RSS; ru_maxrss would carry over the parent's
# peak across fork+exec on Linux.
_CHILD = """
import sys, time
t0 = time.perf_counter()
import converter
converter.convert(sys.argv[1], fmk="ONNX", output=sys.argv[2])
dt = time.perf_counter() - t0
hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:")][0].split()[1]
print(f"{dt:.3f} {hwm}")
"""


def _convert_in_child(src: Path, out: Path) -> tuple[float, int]:
    res = subprocess.run(
        [sys.executable, "-c", _CHILD, str(src), str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    seconds, kib = res.stdout.strip().splitlines()[-1].split()
    return float(seconds), int(kib) * 1024


def _ort_session_seconds(src: Path) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    t0 = time.perf_counter()
    ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
    return time.perf_counter() - t0


def bench_bert(workdir: Path) -> dict:
    src = workdir / "bert_base.onnx"
    onnx.save(M.bert_encoder(M.BertConfig()), src)
    size = src.stat().st_size
    seconds, peak = _convert_in_child(src, workdir / "bert_base.ms")
    ort_s = _ort_session_seconds(src)
    return {
        "model": "bert_base",
        "file_mb": round(size / 2**20, 1),
        "peak_rss_mb": round(peak / 2**20, 1),
        "peak_over_file": round(peak / size, 2),
        "convert_s": round(seconds, 2),
        "ort_session_s": round(ort_s, 2),
        "ms_mb": round((workdir / "bert_base.ms").stat().st_size / 2**20, 1),
    }


def _huge_model(workdir: Path, gib: float) -> Path:
    """MatMul chain [1,K] x [K,K] ... with about ``gib`` GiB of weights, external data."""
    k = 8192
    per = k * k * 4
    layers = max(1, int(np.ceil(gib * 2**30 / per)))
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    x = "x"
    for i in range(layers):
        w = (rng.standard_normal((k, k), dtype=np.float32) / np.sqrt(k)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        y = f"h{i}" if i < layers - 1 else "y"
        nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"], name=f"mm{i}"))
        nodes.append(helper.make_node("Tanh", [f"m{i}"], [y], name=f"act{i}"))
        x = y
    graph = helper.make_graph(
        nodes,
        "huge",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, k])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    src = workdir / "huge.onnx"
    onnx.save(model, src, save_as_external_data=True, all_tensors_to_one_file=True,
              location="huge.onnx.data", size_threshold=1024)  # fmt: skip
    return src


def bench_huge(workdir: Path, gib: float) -> dict:
    import onnxruntime as ort

    import converter

    src = _huge_model(workdir, gib)
    weights = (workdir / "huge.onnx.data").stat().st_size
    out = workdir / "huge.ms"
    seconds, peak = _convert_in_child(src, out)
    files = sorted(p.name for p in workdir.iterdir() if p.name.startswith("huge.ms"))
    model = converter.load(out)
    x = np.random.default_rng(1).standard_normal((1, 8192), np.float32)
    got = model.run({"x": x})["y"]
    sess = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"x": x})[0]
    cos = float(np.dot(got.ravel(), ref.ravel()) / (np.linalg.norm(got) * np.linalg.norm(ref)))
    return {
        "model": "huge",
        "weights_gib": round(weights / 2**30, 2),
        "convert_s": round(seconds, 1),
        "peak_rss_mb": round(peak / 2**20, 1),
        "ms_files": files,
        "ms_bytes": {p: (workdir / p).stat().st_size for p in files},
        "cosine_vs_onnxruntime": round(cos, 6),
        "max_abs": float(np.max(np.abs(got - ref))),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("which", choices=["bert", "huge"])
    ap.add_argument("--gib", type=float, default=2.2)
    ap.add_argument("--json", default=None)
    ap.add_argument("--dir", default=None, help="work folder (default: a temp folder)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        row = bench_bert(Path(tmp)) if args.which == "bert" else bench_huge(Path(tmp), args.gib)
    print(json.dumps(row, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
