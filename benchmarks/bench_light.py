"""The onnx package's light reference models, converted and run by liteconv.

    .venv/bin/python -m benchmarks.bench_light [--json out.json]

For every ``onnx/backend/test/data/light/light_*.onnx``: convert to `.ms`
(default pipeline), load, run on the input the onnx backend test uses
(``arange(n)/n`` reshaped to the input shape), and compare with the shipped
``light_*_output_0.pb``. Prints cosine similarity, max abs error and node
counts before/after optimization.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def light_models() -> list[str]:
    return sorted(p.stem[len("light_") :] for p in LIGHT_DIR.glob("light_*.onnx"))


def backend_input(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The input the onnx backend test runner generates (random=False)."""
    inits = {i.name for i in model.graph.initializer}
    feeds = {}
    for x in model.graph.input:
        if x.name in inits:
            continue
        shape = tuple(
            d.dim_value if d.HasField("dim_value") else 1 for d in x.type.tensor_type.shape.dim
        )
        n = int(np.prod(shape))
        feeds[x.name] = (np.arange(n).reshape(shape) / n).astype(np.float32)
    return feeds


def run_light_model(name: str, workdir: Path) -> dict:
    import converter

    src = LIGHT_DIR / f"light_{name}.onnx"
    model = onnx.load(src)
    expected = numpy_helper.to_array(
        onnx.load_tensor(str(LIGHT_DIR / f"light_{name}_output_0.pb"))
    )
    t0 = time.perf_counter()
    result = converter.convert(src, fmk="ONNX", output=workdir / f"{name}.ms")
    seconds = time.perf_counter() - t0
    loaded = converter.load(result.output)
    got = next(iter(loaded.run(backend_input(model)).values()))
    g = got.astype(np.float64).ravel()
    e = expected.astype(np.float64).ravel()
    cos = float(g @ e / (np.linalg.norm(g) * np.linalg.norm(e)))
    return {
        "model": name,
        "cosine": cos,
        "max_abs": float(np.max(np.abs(g - e))),
        "allclose_rtol1e-3_atol1e-5": bool(np.allclose(got, expected, rtol=1e-3, atol=1e-5)),
        "nodes_before": result.nodes_before,
        "nodes_after": result.nodes_after,
        "convert_s": round(seconds, 2),
        "ms_bytes": result.output.stat().st_size,
        "onnx_bytes": src.stat().st_size,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in light_models():
            r = run_light_model(name, Path(tmp))
            rows.append(r)
            ok = "PASS" if r["cosine"] >= 0.9999 else "FAIL"
            print(
                f"{ok} {name:<14} cosine {r['cosine']:.7f}  max_abs {r['max_abs']:.2e}  "
                f"nodes {r['nodes_before']}->{r['nodes_after']}  convert {r['convert_s']}s",
                flush=True,
            )
    passed = sum(r["cosine"] >= 0.9999 for r in rows)
    print(f"{passed}/{len(rows)} light models match their reference output (cosine >= 0.9999)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
