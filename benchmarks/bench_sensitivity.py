"""Int8 sensitivity (``liteconv sensitivity``): speed, ranking fidelity, and what a qtable buys.

    .venv/bin/python -m benchmarks.bench_sensitivity [--quick] [--json out.json]

1. Speed: ``liteconv sensitivity`` (the CLI, in-process, wall clock from parse to the
   written qtable) on ``benchmarks.models.mobilenet_v2(1.0)`` at 224x224 (``--image``),
   100 calibration and 30 inference samples (random normal, seed 0; inference = the
   first 30 calibration samples, as TPU-MLIR takes them from its dataset), all four
   methods, ``--target-cos 0.99``; the default (``--screen 8``) and, with ``--exact``,
   ``--screen 0`` (every method on every sample).
2. Fidelity: on MobileNetV2 (width 0.35, 64x64) the fake-quantized per-op losses against
   the real int8 graph with that op alone quantized (``Analysis.int8_alone_loss``; convs
   and the Gemm: the rewriter quantizes Add / GlobalAveragePool only behind int8
   producers): Spearman rank correlation and the overlap of the five worst ops.
3. Benefit: a trained model with an outlier-heavy layer: an MLP (64-128-64-10, Relu)
   trained by scikit-learn on its bundled digits data set, in which hidden units 0-15
   of the first layer are scaled by 300 and the next layer's weights reading them by
   1/300 (exactly the same float function, as Relu is positively homogeneous):
   "massive activations" as trained networks have. Per-tensor int8 activations then
   leave the other 112 units a level or two, and clipping (KL, PERCENTILE) loses the
   16 large ones. ``convert --configFile`` (MAX_MIN) vs ``convert
   --configFile --qtable`` from ``sensitivity --target-cos 0.99``, both ``.ms`` files run
   by the executor and compared with onnxruntime's float outputs on the inference
   samples (held-out digits; calibration = the first ``n`` of them).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from benchmarks import models


def _samples(folder: Path, n: int, image: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        np.save(folder / f"{i:04d}.npy",
                rng.standard_normal((1, 3, image, image)).astype(np.float32))
    return f"input:{folder}"


def _config(root: Path, spec: str, size: int, method: str = "MAX_MIN") -> Path:
    cfg = root / "full_quant.ini"
    cfg.write_text(
        "[common_quant_param]\nquant_type=FULL_QUANT\nbit_num=8\n"
        f"[full_quant_param]\nactivation_quant_method={method}\nper_channel=true\n"
        f"[data_preprocess_param]\ncalibrate_path={spec}\ncalibrate_size={size}\n"
    )
    return cfg


def _cli(args: list[str]) -> float:
    """Run ``liteconv ARGS`` in-process; wall seconds (SystemExit 0 expected)."""
    from converter.cli import main

    t0 = time.perf_counter()
    try:
        main(args)
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise RuntimeError(f"liteconv {' '.join(args)} exited {exc.code}") from None
    return time.perf_counter() - t0


def speed(root: Path, image: int, n_cal: int, n_inf: int, exact: bool) -> dict:
    src = root / "mobilenet_v2.onnx"
    onnx.save(models.mobilenet_v2(1.0, image=image), src)
    cfg = _config(root, _samples(root / "cal", n_cal, image), n_cal)
    out: dict = {"model": f"mobilenet_v2(1.0) {image}x{image}", "calibration": n_cal,
                 "inference": n_inf, "cpus": os.cpu_count()}
    for screen in ([8, 0] if exact else [8]):
        rep = root / f"sens_{screen}.json"
        secs = _cli(["sensitivity", str(src), "--fmk", "ONNX", "--configFile", str(cfg),
                     "--inference-size", str(n_inf), "--target-cos", "0.99", "--screen",
                     str(screen), "--qtable", str(root / f"mnv2_{screen}.qtable"),
                     "--json", str(rep), "-q"])
        data = json.loads(rep.read_text())
        out[f"screen_{screen}"] = {"wall_seconds": round(secs, 1), "stages": data["seconds"],
                                   "ops": len(data["ops"]),
                                   "int8_cosine": data["int8_cosine"]}
        print(f"sensitivity mobilenet_v2 {image}x{image}, {n_cal} calibration / {n_inf} "
              f"inference samples, --screen {screen}: {secs:.1f}s wall "
              f"({len(data['ops'])} ops x 4 methods; stages {data['seconds']})", flush=True)
    return out


def fidelity() -> dict:
    from converter.pipeline import load_optimized
    from passes.quant import sensitivity as S

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "m.onnx"
        onnx.save(models.mobilenet_v2(0.35, image=64, classes=10), src)
        g = load_optimized(src, "ONNX", input_shapes={"input": [1, 3, 64, 64]})
    rng = np.random.default_rng(1)
    cal = [{"input": rng.standard_normal((1, 3, 64, 64)).astype(np.float32)} for _ in range(16)]
    an = S.analyze(g, cal, cal[:8], {"quant_type": "FULL_QUANT"}, {}, screen=0)
    fake = {r.name: r.losses["MAX_MIN"] for r in an.results}
    real: dict[str, float] = {}
    for k, c in enumerate(an.candidates):  # conv / gemm: binary ops need int8 producers
        loss = an.int8_alone_loss(k, "MAX_MIN")
        if loss is not None:
            real[c.node.name] = loss
    names = list(real)
    fake = {n: fake[n] for n in names}
    rho = _spearman([fake[n] for n in names], [real[n] for n in names])
    top = lambda d: set(sorted(d, key=d.get, reverse=True)[:5])  # noqa: E731
    overlap = len(top(fake) & top(real))
    print(f"fake-quant vs int8 ranking (mobilenet_v2 0.35, 64x64, {len(names)} ops): Spearman "
          f"{rho:.3f}, worst-5 overlap {overlap}/5", flush=True)
    return {"ops": len(names), "spearman": rho, "top5_overlap": overlap}


def _spearman(a: list[float], b: list[float]) -> float:
    ra = np.argsort(np.argsort(a)).astype(np.float64)
    rb = np.argsort(np.argsort(b)).astype(np.float64)
    return float(np.corrcoef(ra, rb)[0, 1])


def digits_mlp(scale: float = 300.0, units: int = 16) -> tuple[onnx.ModelProto, np.ndarray]:
    """A trained MLP (scikit-learn digits) with 'massive activation' units, and the data.

    Hidden units ``0..units-1`` of the first layer are multiplied by ``scale`` and the
    second layer's weights reading them divided by ``scale``: Relu(s z) = s Relu(z), so
    the float network computes exactly the same function.
    """
    import warnings

    from onnx import TensorProto, helper
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlp = MLPClassifier(hidden_layer_sizes=(128, 64), max_iter=200, random_state=0)
        mlp.fit(x[:1500], y[:1500])
    ws = [w.astype(np.float32) for w in mlp.coefs_]
    bs = [b.astype(np.float32) for b in mlp.intercepts_]
    ws[0][:, :units] *= scale
    bs[0][:units] *= scale
    ws[1][:units, :] /= scale
    nodes, inits, prev = [], [], "input"
    for k, (w, b) in enumerate(zip(ws, bs, strict=True)):
        inits += [numpy_helper.from_array(w, f"w{k}"), numpy_helper.from_array(b, f"b{k}")]
        out = "logits" if k == len(ws) - 1 else f"h{k}"
        nodes.append(helper.make_node("Gemm", [prev, f"w{k}", f"b{k}"], [out], name=f"fc{k}"))
        if k < len(ws) - 1:
            nodes.append(helper.make_node("Relu", [out], [f"r{k}"], name=f"relu{k}"))
            out = f"r{k}"
        prev = out
    graph = helper.make_graph(
        nodes, "digits_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model, x[1500:]


def benefit(root: Path, n_cal: int, n_inf: int) -> dict:
    import onnxruntime as ort

    import converter

    model, data = digits_mlp()
    src = root / "digits_mlp.onnx"
    onnx.save(model, src)
    folder = root / "cal_digits"
    folder.mkdir()
    for i in range(n_cal):
        np.save(folder / f"{i:04d}.npy", data[i][None])
    cfg = _config(root, f"input:{folder}", n_cal)
    qtable = root / "digits.qtable"
    rep = root / "digits.json"
    secs = _cli(["sensitivity", str(src), "--fmk", "ONNX", "--configFile", str(cfg),
                 "--inference-size", str(n_inf), "--target-cos", "0.99", "--qtable",
                 str(qtable), "--json", str(rep), "-q"])
    report = json.loads(rep.read_text())
    floats = report["search"]["floats"]
    _cli(["convert", "--fmk", "ONNX", str(src), str(root / "plain.ms"), "--configFile",
          str(cfg), "-q"])
    _cli(["convert", "--fmk", "ONNX", str(src), str(root / "mixed.ms"), "--configFile",
          str(cfg), "--qtable", str(qtable), "-q"])
    sess = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    feeds = [{"input": data[i][None]} for i in range(n_inf)]
    refs = [sess.run(["logits"], f)[0] for f in feeds]

    def cosine(ms: Path) -> float:
        m = converter.load(ms)
        return float(np.mean([_cos(r, m.run(f)["logits"]) for r, f in
                              zip(refs, feeds, strict=True)]))

    plain, mixed = cosine(root / "plain.ms"), cosine(root / "mixed.ms")
    print(f"digits MLP with 16 units x300: plain int8 cosine {plain:.5f}, with qtable "
          f"{mixed:.5f} ({len(floats)} of {len(report['ops'])} ops kept float: "
          f"{', '.join(floats)}); sensitivity {secs:.1f}s", flush=True)
    return {"model": "digits MLP 64-128-64-10 (scikit-learn, trained), 16 units x300",
            "plain_int8_cosine": plain, "qtable_cosine": mixed, "float_ops": floats,
            "ops": len(report["ops"]), "search_steps": report["search"]["steps"],
            "sensitivity_seconds": round(secs, 1)}


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="112x112, fewer samples")
    ap.add_argument("--image", type=int, default=224)
    ap.add_argument("--exact", action="store_true", help="also time --screen 0")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    n_cal, n_inf = (20, 8) if args.quick else (100, 30)
    image = 112 if args.quick else args.image
    result: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        result["speed"] = speed(root, image, n_cal, n_inf, args.exact)
        result["fidelity"] = fidelity()
        result["benefit"] = benefit(root, n_cal, n_inf)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
