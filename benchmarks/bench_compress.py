"""Weight quantization + entropy coding: .ms size, accuracy and load time per setting.

    .venv/bin/python -m benchmarks.bench_compress [--models resnet50,mobilenet_v2,...]
        [--settings 8,4,mixed@0.06,auto@0.999,auto@0.995,auto@0.99] [--small]
        [--json out.json] [--plot docs/compression.png] [--from-json out.json]

Models (:func:`specs`, random weights, seed 0): resnet50, mobilenet_v2,
efficientnet_b0, yolo_fpn (320x320), ocr_recognizer, unet (128x128), bert (4
layers, full vocabulary, sequence 32) and lstm_tagger. Each is converted to a
float32 `.ms`, then, per setting, parsed, optimized and weight-quantized as
``convert`` does (``quantized_ms``; the settings are MindSpore Lite config
sections, :func:`setting_params`) and written entropy coded and bit-packed:

* ``N``: ``bit_num=N`` per channel; ``mixed@S``: ``bit_num=0``, ``init_scale=S``;
* ``auto@C``: ``bit_num=0``, ``auto_tune=true``, ``target_cosine=C`` (bits per
  tensor by measured output sensitivity, see passes/quant/weight.py);
  ``N/auto@C``: N bits, per-tensor/per-channel by auto_tune. The fixed widths keep
  MindSpore Lite's ``min_quant_weight_channel=16`` and float biases; ``auto@C``
  leaves that key unset, so auto_tune also takes the weights with fewer channels
  and the conv/matmul biases (passes/quant/weight.py).
* A model with realistic inputs (benchmarks/models_real.py) is quantized as a
  user with calibration data would: ``rounding=gptq`` on 16 samples (seeds
  100..115; auto_tune measures on the first 4); a ``/rtn`` suffix (``4/rtn``)
  keeps round-to-nearest, for comparison. Random-weight models get seeded noise.
* A ``/km`` suffix (``4/km``) adds ``kmeans=true``: k-means codebooks
  (passes/quant/kmeans.py) in place of the grid at a fixed width (auto_tune
  offers 2-4 bit codebooks either way).

Reported per setting:

* ``ratio``: float32 `.ms` bytes / quantized `.ms` bytes;
* ``cosine``: the worst output cosine similarity against the float32 `.ms` over
  two held-out seeded inputs (seeds 10 and 11, not the tuning ones);
* ``logits``: the same on what auto_tune measures: the logits of an output a
  Softmax makes (a saturated probability reads 1.0 until a class flips), else
  the output itself; shown in the table in brackets where it differs;
* ``delta``: cosine of the difference between the two inputs' outputs (quantized
  against float32): the input-dependent part, see :func:`delta_cosine`;
* ``bits``: how many weight tensors got each width (the biases auto_tune quantized
  counted in brackets, their widths in the JSON's ``bias_bits``); ``coded/bound``: bytes of the
  entropy-coded tensors over their order-0 entropy bound (sum of per-tensor bounds;
  the worst single tensor in ``worst``);
* load times (best of 7, process CPU seconds of ``read_ms`` + executor setup): the coded file and
  the same codes bit-packed (``enable_encode=false``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

LARGE = 1 << 16
"""Tensors with at least this many codes count as large in coding_stats' worst_large_tensor
(a smaller one pays a visible share for the fixed header and frequency table)."""
SETTINGS = ("8", "4", "mixed@0.06", "auto@0.999", "auto@0.995", "auto@0.99")


@dataclass(frozen=True)
class Spec:
    """A benchmark model: its builder, pinned input shapes and token vocabulary."""

    make: Callable[[], onnx.ModelProto]
    shapes: dict[str, list[int]]
    vocab: int | None = None
    feeds: Callable[[int], dict[str, np.ndarray]] | None = None  # seed -> realistic inputs


def tune_feeds(spec: Spec) -> list[dict[str, np.ndarray]] | None:
    """Calibration inputs for a model with realistic data: seeds 100.., as many as
    ``convert`` takes from a config's calibrate_path for GPTQ (evaluation uses seeds 10, 11)."""
    from passes.quant.weight import GPTQ_SAMPLES

    if spec.feeds is None:
        return None
    return [spec.feeds(100 + s) for s in range(GPTQ_SAMPLES)]


def model_names(arg: str) -> list[str]:
    """``--models`` value: names, with ``real`` standing for every installed trained model."""
    from benchmarks.models_real import available

    names: list[str] = []
    for name in arg.split(","):
        names.extend(available() if name == "real" else [name])
    return names


def specs(small: bool = False) -> dict[str, Spec]:
    """The benchmark models (random weights, seed 0), full size or ``small``."""
    from benchmarks import models as m
    from benchmarks import models_zoo as z

    size = 64 if small else 224
    img = {"input": [1, 3, size, size]}
    bert = m.BertConfig(layers=2, vocab=8000) if small else m.BertConfig(layers=4)
    from benchmarks.models_real import REAL, available

    real = {n: Spec(REAL[n].model, REAL[n].shapes, feeds=REAL[n].feeds) for n in available()}
    return real | {
        "resnet50": Spec(lambda: m.resnet(depth=14 if small else 50, image=size), img),
        "mobilenet_v2": Spec(lambda: m.mobilenet_v2(1.0, image=size), img),
        "efficientnet_b0": Spec(lambda: z.efficientnet(image=size), img),
        "yolo_fpn": Spec(
            lambda: z.yolo_fpn(image=128 if small else 320),
            {"images": [1, 3] + [128 if small else 320] * 2},
        ),
        "ocr_recognizer": Spec(z.ocr_recognizer, {"image": [1, 1, 32, 128]}),
        "unet": Spec(
            lambda: z.unet(image=64 if small else 128),
            {"image": [1, 3] + [64 if small else 128] * 2},
        ),
        "bert": Spec(
            lambda: m.bert_encoder(bert),
            {"input_ids": [1, 32], "attention_mask": [1, 32]},
            bert.vocab,
        ),
        "lstm_tagger": Spec(
            lambda: m.lstm_tagger(vocab=5000, emb=128, hidden=256, tags=20),
            {"tokens": [16, 1]},
            5000,
        ),
    }


def build(name: str, small: bool) -> tuple[onnx.ModelProto, dict[str, list[int]], dict]:
    """(model, input shapes, feeds maker args) for a benchmark model."""
    spec = specs(small).get("lstm_tagger" if name == "lstm" else name)
    if spec is None:
        raise SystemExit(f"unknown model {name!r}: use {', '.join(specs())}")
    return spec.make(), spec.shapes, {"vocab": spec.vocab, "spec": spec}


def feeds_for(graph: Any, seed: int, vocab: int | None) -> dict[str, np.ndarray]:
    """Seeded inputs: floats standard normal, masks ones, token ids uniform in the vocabulary."""
    rng = np.random.default_rng(seed)
    out = {}
    for v in graph.inputs:
        shape = tuple(int(d) for d in v.shape)
        if v.dtype.is_float:
            out[v.name] = rng.standard_normal(shape).astype(v.dtype.numpy)
        elif "mask" in v.name:
            out[v.name] = np.ones(shape, v.dtype.numpy)
        else:
            out[v.name] = rng.integers(0, vocab or 10, shape).astype(v.dtype.numpy)
    return out


def setting_params(setting: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(common, mixed_bit, weight) config sections of a setting, MindSpore Lite spelling.

    ``N``: ``bit_num=N``; ``mixed@S``: ``bit_num=0 init_scale=S``; ``auto@C``:
    ``bit_num=0 auto_tune=true`` with output cosine target C (``target_cosine``);
    ``N/auto@C``: ``bit_num=N auto_tune=true`` (per tensor or per channel chosen by auto_tune).
    """
    from converter.config import CommonQuantParam, MixedBitWeightQuantParam, WeightQuantParam

    common = dataclasses.asdict(CommonQuantParam(quant_type="WEIGHT_QUANT"))
    mixed = dataclasses.asdict(MixedBitWeightQuantParam())
    weight = dataclasses.asdict(WeightQuantParam())
    common.update(min_quant_weight_size=0, enable_encode=True)
    base, flags = setting_flags(setting)
    weight["kmeans"] = "km" in flags
    kind, _, arg = base.partition("@")
    if kind == "mixed":
        common["bit_num"] = 0
        mixed["init_scale"] = float(arg or 0.02)
    elif kind.endswith("auto"):
        common["bit_num"] = int(kind.split("/")[0]) if "/" in kind else 0
        mixed.update(auto_tune=True, max_iterations=16, target_cosine=float(arg or 0.995))
    else:
        common["bit_num"] = int(kind)
    return common, mixed, weight


def setting_flags(setting: str) -> tuple[str, set[str]]:
    """``setting`` without its trailing ``/rtn`` and ``/km`` flags, and those flags."""
    flags: set[str] = set()
    while setting.endswith(("/rtn", "/km")):
        setting, _, flag = setting.rpartition("/")
        flags.add(flag)
    return setting, flags


def quantized_ms(
    src: Path,
    shapes: dict[str, list[int]],
    out: Path,
    setting: str,
    tune: list[dict[str, np.ndarray]] | None = None,
) -> tuple[Path, Path, dict[str, Any], float]:
    """``src`` parsed, optimized (full) and weight-quantized as ``convert`` does, written
    entropy coded (``out``) and bit-packed (``*_packed.ms``); also returns the report and
    the seconds the quantization took."""
    from converter.ms import write_ms
    from converter.pipeline import optimize_graph, parse_model
    from passes.quant.weight import quantize_weights

    graph = parse_model(src, "ONNX", shapes)
    optimize_graph(graph, "full")
    common, mixed, weight = setting_params(setting)
    if tune is not None and "rtn" not in setting_flags(setting)[1]:  # realistic data: as a user
        weight["rounding"] = "gptq"  # would (GPTQ subsumes bias correction)
    t0 = time.perf_counter()
    report = quantize_weights(graph, common=common, mixed_bit=mixed, weight=weight, tune_feeds=tune)
    seconds = time.perf_counter() - t0
    write_ms(graph, out)
    for v in graph.values():
        if "quant_encode" in v.meta:
            v.meta["quant_encode"] = False
    packed = out.with_name(out.stem + "_packed.ms")
    write_ms(graph, packed)
    return out, packed, report, seconds


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def delta_cosine(refs: list[dict[str, np.ndarray]], got: list[dict[str, np.ndarray]]) -> float:
    """Worst cosine between ``got[0] - got[1]`` and ``refs[0] - refs[1]`` over the outputs.

    The part of an output that depends on the input. With random weights many of
    these models answer almost the same for any input (plain cosine between two
    inputs' float outputs 0.9996-1.0 for the CNNs), so plain cosine mostly checks
    the constant part; this one checks what the inputs change. One-element outputs
    are left out while larger ones exist: the cosine of two scalars is only their
    sign (silero-vad's speech probability, nearly equal for the two inputs, read
    -1 while its 256-element state agreed to 0.999).
    """
    return min(_cosine(refs[0][k] - refs[1][k], got[0][k] - got[1][k]) for k in delta_keys(refs))


def delta_keys(refs: list[dict[str, np.ndarray]]) -> list[str]:
    """The outputs :func:`delta_cosine` compares: those with more than one element, if any."""
    big = [k for k, v in refs[0].items() if np.size(v) > 1]
    return big or list(refs[0])


def _load_seconds(path: Path, repeat: int = 7) -> float:
    from converter.executor.runtime import Runtime
    from converter.ms import read_ms

    times = []
    for _ in range(repeat):
        t0 = time.process_time()  # CPU time: other processes on a shared machine don't count
        Runtime(read_ms(path))
        times.append(time.process_time() - t0)
    return min(times)


def coding_stats(path: Path) -> dict[str, Any]:
    """Coded bytes vs the order-0 entropy bound of the same codes, over FSE tensors."""
    from converter.ms import read_ms
    from converter.ms.codec import entropy_bound_bytes

    coded = bound = 0.0
    worst = (1.0, "")
    worst_large = (1.0, "")
    kinds: dict[str, int] = {}
    for v in read_ms(path).values():
        if v.const is None or "quant_codes" not in v.meta:
            continue
        kind = v.meta["ms_compression"]
        kinds[kind] = kinds.get(kind, 0) + 1
        if kind != "FSE":
            continue
        b = entropy_bound_bytes(v.meta["quant_codes"])
        coded += v.meta["ms_stored_bytes"]
        bound += b
        if b > 0 and v.meta["ms_stored_bytes"] / b > worst[0]:
            worst = (v.meta["ms_stored_bytes"] / b, v.name)
        if b > 0 and v.const.size >= LARGE and v.meta["ms_stored_bytes"] / b > worst_large[0]:
            worst_large = (v.meta["ms_stored_bytes"] / b, v.name)
    return {
        "coded_bytes": int(coded),
        "bound_bytes": int(bound),
        "coded_over_bound": coded / bound if bound else None,
        "worst_tensor": {"ratio": worst[0], "name": worst[1]},
        "worst_large_tensor": {"ratio": worst_large[0], "name": worst_large[1]},
        "tensors_by_compression": kinds,
    }


def bench_model(name: str, settings: list[str], small: bool, work: Path) -> dict[str, Any]:
    import converter
    from passes.quant.weight import tuned_outputs

    model, shapes, extra = build(name, small)
    src = work / f"{name}.onnx"
    onnx.save(model, src)
    float_ms = converter.convert(src, output=work / f"{name}_f32.ms", input_shapes=shapes).output
    ref_model = converter.load(float_ms)
    spec: Spec = extra["spec"]
    feeds = [
        spec.feeds(s) if spec.feeds else feeds_for(ref_model.graph, s, spec.vocab)
        for s in (10, 11)
    ]
    refs = [ref_model.run(f) for f in feeds]
    ref_logits = tuned_outputs(ref_model.graph, feeds)
    float_bytes = float_ms.stat().st_size
    rows = []
    for setting in settings:
        path, packed, wq, seconds = quantized_ms(
            src, shapes, work / f"{name}_{setting.replace('/', '_')}.ms", setting, tune_feeds(spec)
        )
        out: dict[str, Any] = {"setting": setting, "quantize_s": round(seconds, 2)}
        out["bytes"] = path.stat().st_size
        out["ratio"] = float_bytes / out["bytes"]
        out["average_bits"] = round(wq["average_bits"], 3)
        weights = [layer for layer in wq["layers"] if layer.get("input") != "bias"]
        out["bits"] = _histogram([layer["bits"] for layer in weights])
        biases = [layer for layer in wq["layers"] if layer.get("input") == "bias"]
        out["bias_bits"] = _histogram([layer["bits"] for layer in biases]) if biases else ""
        out["bias_bytes"] = sum(layer["stored_bytes"] for layer in biases)
        out["per_tensor"] = wq["per_tensor"]
        out["kmeans"] = sum(layer["kmeans"] for layer in wq["layers"])
        if "auto_tune" in wq:
            tune = wq["auto_tune"]
            out["tuning_cosine"] = tune["trials"][tune["chosen"]]["cosine"]
            out["rounds"] = len(wq["auto_tune"]["trials"])
            out["flipped_trials"] = sum(t["cosine"] < 0 for t in tune["trials"])  # cliff cap
        q = converter.load(path)
        got = [q.run(f) for f in feeds]
        out["cosine"] = min(_cosine(r[k], g[k]) for g, r in zip(got, refs, strict=True) for k in r)
        out["delta_cosine"] = delta_cosine(refs, got)
        out["logit_cosine"] = min(
            _cosine(r, g)
            for rs, gs in zip(ref_logits, tuned_outputs(q.graph, feeds), strict=True)
            for r, g in zip(rs, gs, strict=True)
        )
        out.update(coding_stats(path))
        out["bytes_packed"] = packed.stat().st_size
        out["load_coded_s"] = _load_seconds(path)
        out["load_packed_s"] = _load_seconds(packed)
        out["load_coded_over_packed"] = out["load_coded_s"] / out["load_packed_s"]
        rows.append(out)
    return {
        "model": name,
        "float_bytes": float_bytes,
        "load_float_s": _load_seconds(float_ms),
        "settings": rows,
    }


def _histogram(bits: list[int]) -> str:
    """``{bits: count}`` as ``"2:5 3:10 8:1"``."""
    values, counts = np.unique(np.asarray(bits, dtype=np.int64), return_counts=True)
    return " ".join(f"{v}:{c}" for v, c in zip(values.tolist(), counts.tolist(), strict=True))


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Size-accuracy curves: compression ratio against 1 - output cosine, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    for r in results:
        tuned = sorted((s for s in r["settings"] if s["setting"].startswith("auto")),
                       key=lambda s: s["ratio"])  # fmt: skip
        other = [s for s in r["settings"] if not s["setting"].startswith("auto")]
        (line,) = ax.plot(
            [s["ratio"] for s in tuned],
            [max(1.0 - s["cosine"], 1e-7) for s in tuned],
            marker="o",
            label=r["model"],
        )
        ax.scatter(
            [s["ratio"] for s in other],
            [max(1.0 - s["cosine"], 1e-7) for s in other],
            facecolors="none",
            edgecolors=line.get_color(),
        )
    ax.axhline(0.01, color="grey", linestyle="--", linewidth=0.8)
    ax.axvline(8.0, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("float32 .ms bytes / quantized .ms bytes")
    ax.set_ylabel("1 - worst output cosine (held-out inputs)")
    ax.set_yscale("log")
    ax.set_xscale("log")
    ax.set_title("weight quantization: auto_tune (lines) vs fixed 8/4 bits, mixed@0.06 (rings)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def markdown(results: list[dict[str, Any]]) -> str:
    """One markdown row per model and setting (for docs/results.md)."""
    lines = [
        "| model | setting | bits (tensors) | MB | ratio | cosine | delta cosine | coded/bound "
        "(worst; worst >= 64K codes) |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        for s in r["settings"]:
            cb = s["coded_over_bound"]
            large = s.get("worst_large_tensor", {}).get("ratio", float("nan"))
            bound = (
                "-" if cb is None else f"{cb:.4f} ({s['worst_tensor']['ratio']:.3f}; {large:.3f})"
            )
            cosine = f"{s['cosine']:.5f}"
            logits = s.get("logit_cosine", s["cosine"])
            if abs(logits - s["cosine"]) > 5e-6:
                cosine += f" (logits {logits:.5f})"
            bits = s["bits"]
            if s.get("bias_bits"):
                bits += f" (+{sum(int(c.split(':')[1]) for c in s['bias_bits'].split())} biases)"
            lines.append(
                f"| {r['model']} | {s['setting']} | {bits} | {s['bytes'] / 1e6:.2f} | "
                f"{s['ratio']:.2f} | {cosine} | {s.get('delta_cosine', float('nan')):.4f} "
                f"| {bound} |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--models",
        default="resnet50,mobilenet_v2,bert,lstm",
        help="comma-separated names; 'real' = the trained models of benchmarks.models_real",
    )
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--small", action="store_true", help="reduced model sizes (quick check)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--plot", default=None, help="write the size-accuracy curves (PNG)")
    ap.add_argument("--from-json", default=None, help="print/plot saved results, run nothing")
    args = ap.parse_args()
    settings = args.settings.split(",")
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        print(markdown(saved))
        if args.plot:
            plot(saved, Path(args.plot))
        return
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in model_names(args.models):
            r = bench_model(name, settings, args.small, Path(tmp))
            results.append(r)
            print(
                f"{name}: float32 .ms {r['float_bytes'] / 1e6:.2f} MB, "
                f"load {r['load_float_s'] * 1e3:.0f} ms"
            )
            print(
                f"  {'setting':<12} {'bits':>5} {'MB':>8} {'ratio':>6} {'cosine':>9} {'logits':>9} "
                f"{'delta':>7} "
                f"{'coded/bound':>11} {'worst':>6} {'load coded/packed ms':>21}"
            )
            for s in r["settings"]:
                cb = s["coded_over_bound"]
                print(
                    f"  {s['setting']:<12} {s['average_bits']:>5.2f} {s['bytes'] / 1e6:>8.2f} "
                    f"{s['ratio']:>6.2f} {s['cosine']:>9.6f} {s['logit_cosine']:>9.6f} "
                    f"{s['delta_cosine']:>7.4f} "
                    f"{'-' if cb is None else f'{cb:.4f}':>11} {s['worst_tensor']['ratio']:>6.3f} "
                    f"{s['load_coded_s'] * 1e3:>9.0f} / {s['load_packed_s'] * 1e3:<9.0f}"
                )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    print(markdown(results))
    if args.plot:
        plot(results, Path(args.plot))


if __name__ == "__main__":
    main()
