"""Every front end on its test architectures, verified against its own runtime.

    .venv/bin/python -m benchmarks.bench_frontends [--only TFLITE,TF,CAFFE] [--json out.json]

TFLITE: Keras models converted by TFLiteConverter in float32, float16-weight and
full-int8 forms, compared with LiteRT (float: cosine; int8: the largest
difference in output quantization steps). TF: Keras models saved as SavedModel,
compared with TensorFlow. CAFFE: hand-written prototxts with generated weights,
compared with the Caffe reference (converter/reference/caffe.py). Also reports
how many LSTM/GRU/RNN and Loop nodes the recurrent models end with.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

TFLITE_MODELS = {
    "mobilenet_v2": ("float32", "float16", "int8"),
    "resnet": ("float32", "float16", "int8"),
    "efficientnet_lite": ("float32", "float16", "int8"),
    "transformer": ("float32", "float16", "int8"),
    "lstm": ("float32", "float16"),
    "keras_lstm": ("float32",),
    "keras_gru": ("float32",),
}
TF_MODELS = ("mobilenet_v2", "resnet", "lstm_model", "gru_model", "transformer_block")
RECURRENT = ("LSTM", "GRU", "RNN", "Loop")


def _recurrent_counts(graph: Any) -> dict[str, int]:
    ops = graph.count_ops()
    return {op: ops[op] for op in RECURRENT if op in ops}


def _verified(src: Path, fmk: str, out: Path, **kw: Any) -> dict[str, Any]:
    import converter

    result = converter.convert(src, fmk=fmk, output=out, verify=True, raise_on_mismatch=False, **kw)
    assert result.verify is not None
    return {
        "cosine": min(m.cosine for m in result.verify.outputs),
        "max_abs": max(m.max_abs for m in result.verify.outputs),
        "passed": result.verify.passed,
        "nodes": result.nodes_after,
        "recurrent": _recurrent_counts(result.graph),
    }


def _int8_steps(src: Path, out: Path) -> dict[str, Any]:
    """Largest |liteconv - LiteRT| of the int8 outputs, in quantization steps."""
    import converter
    from converter.reference.tflite import run as litert
    from converter.verify import make_inputs

    result = converter.convert(src, fmk="TFLITE", output=out)
    model = converter.load(result.output)
    rng = np.random.default_rng(1)
    feeds = {}
    for v in model.graph.inputs:
        dt = v.dtype.numpy
        shape = tuple(d if isinstance(d, int) else 1 for d in v.shape)
        if np.issubdtype(dt, np.integer):
            info = np.iinfo(dt)
            feeds[v.name] = rng.integers(info.min, info.max + 1, shape).astype(dt)
        else:
            feeds[v.name] = make_inputs([v], seed=1)[v.name]
    got = model.run(feeds)
    ref = litert(src, feeds)
    steps = 0
    for name, g in got.items():
        diff = np.abs(g.astype(np.int64) - np.asarray(ref[name]).astype(np.int64))
        steps = max(steps, int(diff.max()) if diff.size else 0)
    return {"max_steps": steps, "passed": steps <= 1, "nodes": result.nodes_after}


def bench_tflite(work: Path) -> list[dict[str, Any]]:
    from benchmarks.models_tflite import build

    rows = []
    for name, forms in TFLITE_MODELS.items():
        for form in forms:
            src = build(name, form, work / f"{name}_{form}.tflite")
            out = work / f"{name}_{form}.ms"
            row = _int8_steps(src, out) if form == "int8" else _verified(src, "TFLITE", out)
            rows.append({"fmk": "TFLITE", "model": f"{name} ({form})", **row})
    return rows


def bench_tf(work: Path) -> list[dict[str, Any]]:
    from benchmarks import models_tf

    rows = []
    for name in TF_MODELS:
        build: Callable[[], Any] = getattr(models_tf, name)
        src = models_tf.save_saved_model(build(), work / f"{name}_saved")
        rows.append(
            {"fmk": "TF", "model": name, **_verified(src, "TF", work / f"{name}.ms")}
        )
    return rows


def bench_caffe(work: Path) -> list[dict[str, Any]]:
    from benchmarks.models_caffe import NETS, write_net

    rows = []
    for name in NETS:
        proto, weights = write_net(name, work)
        row = _verified(proto, "CAFFE", work / f"{name}.ms", weight_file=weights)
        rows.append({"fmk": "CAFFE", "model": name, **row})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="TFLITE,TF,CAFFE")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    benches = {"TFLITE": bench_tflite, "TF": bench_tf, "CAFFE": bench_caffe}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for fmk in args.only.split(","):
            work = Path(tmp) / fmk
            work.mkdir()
            for row in benches[fmk](work):
                rows.append(row)
                metric = (
                    f"int8 max diff {row['max_steps']} step(s)"
                    if "max_steps" in row
                    else f"cosine {row['cosine']:.7f}"
                )
                rec = f"  {row['recurrent']}" if row.get("recurrent") else ""
                ok = "PASS" if row["passed"] else "FAIL"
                print(f"{ok} {fmk:<6} {row['model']:<28} {metric}  nodes {row['nodes']}{rec}",
                      flush=True)  # fmt: skip
    passed = sum(r["passed"] for r in rows)
    print(f"{passed}/{len(rows)} models pass")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
