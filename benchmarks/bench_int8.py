"""Full int8 quantization: liteconv vs onnxruntime's quantize_static, and calibration memory.

    .venv/bin/python -m benchmarks.bench_int8 [--quick] [--skip-rss] [--json out.json]

For four models (benchmarks/models.py: ResNet-14, MobileNetV2, a small BERT, an LSTM
tagger) the same calibration samples (``--calib`` random inputs, fixed seed) feed

* liteconv: ``convert --configFile`` with ``quant_type=FULL_QUANT``,
  ``activation_quant_method=MAX_MIN``, per-channel int8 weights; the ``.ms`` is run by
  the executor;
* onnxruntime: ``quant_pre_process`` (its recommended shape inference and graph
  optimization) then ``quantize_static`` (QDQ, per_channel=True, MinMax, int8
  activations and weights), run by onnxruntime;

and both int8 outputs are compared with the float32 model (onnxruntime) on
``--eval`` other inputs: mean cosine similarity per model.

Memory: a child process converts a BERT-base-sized encoder (hidden 768, 12 layers,
vocab 30522) with FULL_QUANT calibrated on 100 samples of ``--seq`` tokens and reports
its peak resident set (VmHWM); the model file is built by another child beforehand.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from benchmarks import models

Feeds = dict[str, np.ndarray]
Case = tuple[onnx.ModelProto, Callable[[np.random.Generator], Feeds]]


def _cases(quick: bool) -> dict[str, Case]:
    image = 64 if quick else 112
    bert = models.BertConfig(vocab=1000, hidden=128 if quick else 256, layers=2 if quick else 4,
                             heads=4, intermediate=512 if quick else 1024, max_positions=128)
    seq = 32

    def img(rng: np.random.Generator) -> Feeds:
        return {"input": rng.standard_normal((1, 3, image, image)).astype(np.float32)}

    def tokens(rng: np.random.Generator) -> Feeds:
        return {"input_ids": rng.integers(0, bert.vocab, (1, seq)).astype(np.int64),
                "attention_mask": np.ones((1, seq), np.int64)}

    def tagger(rng: np.random.Generator) -> Feeds:
        return {"tokens": rng.integers(0, 50, (seq, 1)).astype(np.int64)}

    return {
        "resnet14": (models.resnet(14, width=32 if quick else 64, image=image, classes=100), img),
        "mobilenet_v2": (models.mobilenet_v2(image=image, classes=100,
                                             width_mult=0.5 if quick else 1.0), img),
        "bert": (models.bert_encoder(bert), tokens),
        "lstm": (models.lstm_tagger(hidden=64), tagger),
    }


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def _write_calibration(root: Path, samples: list[Feeds]) -> str:
    spec = []
    for name in samples[0]:
        folder = root / "calib" / name
        folder.mkdir(parents=True, exist_ok=True)
        for i, s in enumerate(samples):
            np.save(folder / f"{i:04d}.npy", s[name])
        spec.append(f"{name}:{folder}")
    return ",".join(spec)


def _config(root: Path, spec: str, size: int, method: str = "MAX_MIN") -> Path:
    cfg = root / "full_quant.ini"
    cfg.write_text(
        "[common_quant_param]\nquant_type=FULL_QUANT\nbit_num=8\n"
        f"[full_quant_param]\nactivation_quant_method={method}\nper_channel=true\n"
        f"[data_preprocess_param]\ncalibrate_path={spec}\ncalibrate_size={size}\n"
    )
    return cfg


class _Reader:
    """onnxruntime CalibrationDataReader over the same samples."""

    def __init__(self, samples: list[Feeds]) -> None:
        self.it = iter(samples)

    def get_next(self) -> Feeds | None:
        return next(self.it, None)


def _ort_int8(src: Path, dst: Path, samples: list[Feeds]) -> None:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = dst.with_name(dst.stem + "_pre.onnx")
    quant_pre_process(str(src), str(pre))  # onnxruntime's recommended step (folds BN)
    quantize_static(str(pre), str(dst), _Reader(samples), quant_format=QuantFormat.QDQ,
                    per_channel=True, calibrate_method=CalibrationMethod.MinMax,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)


def compare(quick: bool, n_calib: int, n_eval: int) -> list[dict]:
    import onnxruntime as ort

    import converter
    from converter.pipeline import convert

    rows = []
    for name, (model, gen) in _cases(quick).items():
        rng = np.random.default_rng(0)
        calib = [gen(rng) for _ in range(n_calib)]
        evals = [gen(rng) for _ in range(n_eval)]
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            src = root / f"{name}.onnx"
            onnx.save(model, src)
            float_sess = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
            out = float_sess.get_outputs()[0].name
            refs = [float_sess.run([out], e)[0] for e in evals]
            cfg = _config(root, _write_calibration(root, calib), n_calib)
            t0 = time.perf_counter()
            convert(src, fmk="ONNX", output=root / f"{name}.ms", config_file=cfg)
            t_lite = time.perf_counter() - t0
            lite = converter.load(root / f"{name}.ms")
            cos_lite = np.mean([_cosine(r, lite.run(e)[out]) for r, e in zip(refs, evals,
                                                                               strict=True)])
            t0 = time.perf_counter()
            _ort_int8(src, root / f"{name}_qdq.onnx", calib)
            t_ort = time.perf_counter() - t0
            qsess = ort.InferenceSession(str(root / f"{name}_qdq.onnx"),
                                         providers=["CPUExecutionProvider"])
            cos_ort = np.mean([_cosine(r, qsess.run([out], e)[0]) for r, e in zip(refs, evals,
                                                                                  strict=True)])
        rows.append({"model": name, "liteconv_cosine": float(cos_lite),
                     "onnxruntime_cosine": float(cos_ort), "liteconv_seconds": t_lite,
                     "onnxruntime_seconds": t_ort})
        print(f"{name:<14} liteconv {cos_lite:.6f}  onnxruntime {cos_ort:.6f}  "
              f"(quantize: {t_lite:.1f}s / {t_ort:.1f}s)", flush=True)
    return rows


def _rss_build(root: Path, seq: int, samples: int) -> None:
    """Child 1: the BERT-base-sized model and its calibration files."""
    onnx.save(models.bert_encoder(models.BertConfig()), root / "bert_base.onnx")
    rng = np.random.default_rng(0)
    cal = [{"input_ids": rng.integers(0, 30522, (1, seq)).astype(np.int64),
            "attention_mask": np.ones((1, seq), np.int64)} for _ in range(samples)]
    (root / "spec.txt").write_text(_write_calibration(root, cal))


def _rss_convert(root: Path, samples: int, method: str) -> None:
    """Child 2: convert with FULL_QUANT; prints JSON with VmHWM and the timings."""
    from converter.pipeline import convert

    cfg = _config(root, (root / "spec.txt").read_text(), samples, method)
    t0 = time.perf_counter()
    result = convert(root / "bert_base.onnx", fmk="ONNX", output=root / "bert_base.ms",
                     config_file=cfg)
    seconds = time.perf_counter() - t0
    hwm = next(line for line in Path("/proc/self/status").read_text().splitlines()
               if line.startswith("VmHWM"))
    kib = int(hwm.split()[1])
    print(json.dumps({"peak_rss_mib": kib / 1024, "seconds": seconds,
                      "compress": result.compression.get("full_quant", {}).get("seconds")}))


def peak_rss(seq: int, samples: int, method: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        me = [sys.executable, "-m", "benchmarks.bench_int8"]
        subprocess.run([*me, "--rss-build", tmp, "--seq", str(seq),
                        "--samples", str(samples)], check=True)
        out = subprocess.run([*me, "--rss-convert", tmp, "--samples", str(samples),
                              "--method", method], check=True, capture_output=True, text=True)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    data.update({"seq": seq, "samples": samples, "method": method})
    print(f"BERT-base FULL_QUANT ({method}), {samples} samples x {seq} tokens: peak RSS "
          f"{data['peak_rss_mib']:.0f} MiB, {data['seconds']:.0f}s", flush=True)
    return data


def main() -> None:
    import logging

    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime.quantization's advice
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller models")
    ap.add_argument("--calib", type=int, default=32)
    ap.add_argument("--eval", type=int, default=8)
    ap.add_argument("--skip-rss", action="store_true")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--method", default="KL")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--rss-build", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--rss-convert", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_build:
        _rss_build(args.rss_build, args.seq, args.samples)
        return
    if args.rss_convert:
        _rss_convert(args.rss_convert, args.samples, args.method)
        return
    result: dict = {"models": compare(args.quick, args.calib, args.eval)}
    if not args.skip_rss:
        result["bert_base_rss"] = peak_rss(args.seq, args.samples, args.method)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
