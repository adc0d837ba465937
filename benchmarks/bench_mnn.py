"""liteconv against MNN: file size and output accuracy at fp16 and 8-bit weights.

    make install-bench   # once: MNN 3.6.1, no dependencies (not liteconv's, not in CI)
    .venv/bin/python -m benchmarks.bench_mnn [--models resnet50,...] [--json out.json]

For each model of ``benchmarks.bench_compress.specs`` (random weights, seed 0,
input shapes pinned in the ``.onnx`` both tools read), four files:

* liteconv ``convert --fp16 on`` -> ``.ms``;  MNN ``--fp16`` -> ``.mnn``;
* liteconv ``[common_quant_param] quant_type=WEIGHT_QUANT bit_num=8`` (per channel,
  symmetric, ``enable_encode=true``) -> ``.ms`` (``q8``), and the same with
  ``auto_tune=true target_cosine=0.9995`` (``q8auto``: still 8-bit codes, one scale per
  tensor or per channel as the search decides: an MSL2 QuantParam costs 20 bytes, a
  float scale in MNN 4);  MNN ``--weightQuantBits 8`` -> ``.mnn``;

plus each tool's float32 file for scale. Accuracy: the worst output cosine
similarity against onnxruntime's float32 outputs of the same ``.onnx`` on two
seeded inputs (seeds 10 and 11: floats standard normal, token ids uniform in the
vocabulary, masks ones), and ``delta``: the cosine of seed 10's output minus
seed 11's against the same difference in float32 (the input-dependent part; with
random weights the CNNs answer almost the same for any input, so plain cosine
mostly checks the constant part of their outputs). The ``.ms`` runs in liteconv's
executor (``--fp16`` files compute in float16 there); the ``.mnn`` runs in MNN's own
Python runtime (``MNN.nn.load_module_from_file``, CPU, default precision).

How MNN is invoked, and why
---------------------------
MNN's ``mnnconvert`` console script and its ``MNN.tools`` package are never run
or imported: ``MNN/tools/mnnconvert.py`` imports ``MNN.tools.utils.log``, which
at import time runs ``os.system("pip install -U aliyun-log-python-sdk")`` when that
SDK is missing and then sends usage logs over the network (its URLs are
base64-encoded in the source). Importing ``MNN.tools`` at all triggers it,
since ``MNN/tools/__init__.py`` imports ``mnnconvert``. Instead:

* conversion calls the compiled converter directly: ``import _tools`` (the C
  extension the wheel installs at top level) and ``_tools.mnnconvert(["mnnconvert",
  "-f", "ONNX", "--modelFile", ..., "--MNNModel", ..., "--bizCode", "liteconv", ...])``,
  the same call ``mnnconvert.py``'s ``convert()`` makes, without its logger;
* inference imports ``MNN`` (``MNN/__init__.py`` imports the runtime extension and
  the ``data/expr/nn/optim/numpy/cv/audio/llm`` wrappers, none of which import
  ``MNN.tools``; checked below by asserting ``MNN.tools`` is not in ``sys.modules``);
* every MNN call runs in a child process (``python -m benchmarks.bench_mnn
  --worker job.json``) inside a fresh network namespace (``unshare -n``) when the
  machine allows it, so the compiled code (which links socket functions) cannot
  reach the network either; the report says which isolation was used;
* the installed distributions (``importlib.metadata``) are listed before and after
  the MNN calls and the benchmark fails if they differ.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from benchmarks.bench_compress import Spec, delta_keys, model_names, specs, tune_feeds

MODELS = (
    "resnet50",
    "mobilenet_v2",
    "efficientnet_b0",
    "yolo_fpn",
    "ocr_recognizer",
    "unet",
    "bert",
    "lstm_tagger",
)
SEEDS = (10, 11)
Q8_AUTO = "8/auto@0.9995"
"""bench_compress setting of the second liteconv 8-bit file: bit_num=8, auto_tune=true,
target_cosine=0.9995 (auto_tune picks one scale per tensor or per channel)."""
MNN_SETTINGS = {"f32": [], "fp16": ["--fp16"], "q8": ["--weightQuantBits", "8"]}


# -- inputs and references --------------------------------------------------------------
def pinned(model: onnx.ModelProto, shapes: dict[str, list[int]]) -> onnx.ModelProto:
    """``model`` with its graph inputs' symbolic dims replaced by ``shapes``."""
    for inp in model.graph.input:
        if inp.name in shapes:
            dims = inp.type.tensor_type.shape.dim
            for d, n in zip(dims, shapes[inp.name], strict=True):
                d.Clear()
                d.dim_value = int(n)
    return model


def make_feeds(model: onnx.ModelProto, seed: int, vocab: int | None) -> dict[str, np.ndarray]:
    """Seeded inputs for the pinned model (the rule of ``bench_compress.feeds_for``)."""
    rng = np.random.default_rng(seed)
    out = {}
    init = {t.name for t in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in init:
            continue
        tt = inp.type.tensor_type
        shape = tuple(d.dim_value for d in tt.shape.dim)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        if np.issubdtype(dtype, np.floating):
            out[inp.name] = rng.standard_normal(shape).astype(dtype)
        elif "mask" in inp.name:
            out[inp.name] = np.ones(shape, dtype)
        else:
            out[inp.name] = rng.integers(0, vocab or 10, shape).astype(dtype)
    return out


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


def worst_cosine(refs: list[dict[str, np.ndarray]], got: list[dict[str, np.ndarray]]) -> float:
    return min(cosine(r[k], g[k]) for r, g in zip(refs, got, strict=True) for k in r)


def scores(refs: list[dict[str, np.ndarray]], got: list[dict[str, np.ndarray]]) -> dict:
    """Worst output cosine, and ``delta``: the same for seed 10's output minus seed 11's."""
    delta = min(cosine(refs[0][k] - refs[1][k], got[0][k] - got[1][k]) for k in delta_keys(refs))
    return {"cosine": worst_cosine(refs, got), "delta": delta}


# -- MNN, in an isolated child process -------------------------------------------------------
def _isolation() -> list[str]:
    """``unshare -n`` when this machine can make a network namespace, else nothing."""
    if shutil.which("unshare") is None:
        return []
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    return ["unshare", "-n"] if probe.returncode == 0 else []


def _distributions() -> list[str]:
    return sorted(f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions())


def run_mnn_job(job: dict[str, Any], work: Path) -> dict[str, Any]:
    """Run ``job`` (conversions, then inference) in a network-isolated child process."""
    path = work / "mnn_job.json"
    path.write_text(json.dumps(job))
    prefix = _isolation()
    cmd = [*prefix, sys.executable, "-m", "benchmarks.bench_mnn", "--worker", str(path)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).parents[1])
    if done.returncode != 0:
        raise RuntimeError(f"MNN worker failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    result = json.loads((work / "mnn_result.json").read_text())
    result["isolation"] = " ".join(prefix) or "none (no network namespace available)"
    return result


def _worker(job_path: Path) -> None:
    """The child: convert with ``_tools.mnnconvert``, run with ``MNN.nn``, write results."""
    job = json.loads(job_path.read_text())
    import _tools  # MNN's compiled converter; never MNN.tools (see the module docstring)

    for args in job["convert"]:
        _tools.mnnconvert(["mnnconvert", *args])
        if not Path(args[args.index("--MNNModel") + 1]).exists():
            raise SystemExit(f"MNN conversion failed: {args}")
    import MNN.expr as F  # noqa: N812
    import MNN.nn

    if "MNN.tools" in sys.modules:
        raise SystemExit("MNN.tools was imported; refusing to go on")
    for run in job["run"]:
        net = MNN.nn.load_module_from_file(run["model"], run["inputs"], run["outputs"])
        outs: dict[str, np.ndarray] = {}
        for i, feeds in enumerate(run["feeds"]):
            data = np.load(feeds)
            args = []
            for name in run["inputs"]:
                x = data[name]
                if np.issubdtype(x.dtype, np.integer):
                    args.append(F.const(x.astype(np.int32), list(x.shape), F.NCHW, F.int))
                else:
                    args.append(F.const(x.astype(np.float32), list(x.shape), F.NCHW))
            ys = net.forward(args)
            ys = ys if isinstance(ys, list) else [ys]
            for name, y in zip(run["outputs"], ys, strict=True):
                y = F.convert(y, F.NCHW)
                outs[f"{i}/{name}"] = np.array(y.read(), dtype=np.float32).reshape(y.shape)
        np.savez(run["out"], **outs)
    Path(job_path.parent / "mnn_result.json").write_text(json.dumps({"ok": True}))


# -- one model ------------------------------------------------------------------------------------
def _liteconv(src: Path, spec: Spec, work: Path, name: str) -> dict[str, Path]:
    import converter
    from benchmarks.bench_compress import quantized_ms

    cfg = work / "q8.cfg"
    cfg.write_text(
        "[common_quant_param]\nquant_type=WEIGHT_QUANT\nbit_num=8\n"
        "min_quant_weight_size=0\nmin_quant_weight_channel=16\nenable_encode=true\n"
    )
    out = {}
    for setting, kw in (("f32", {}), ("fp16", {"fp16": "on"}), ("q8", {"config_file": cfg})):
        res = converter.convert(
            src, output=work / f"{name}_{setting}.ms", input_shapes=spec.shapes, **kw
        )
        out[setting] = res.output
    out["q8auto"] = quantized_ms(
        src, spec.shapes, work / f"{name}_q8auto.ms", Q8_AUTO, tune_feeds(spec)
    )[0]
    return out


def bench_model(name: str, spec: Spec, work: Path) -> dict[str, Any]:
    import converter
    from converter.reference.onnx import run as ort_run

    model = pinned(spec.make(), spec.shapes)
    src = work / f"{name}.onnx"
    onnx.save(model, src)
    feeds = [spec.feeds(s) if spec.feeds else make_feeds(model, s, spec.vocab) for s in SEEDS]
    refs = [ort_run(src, f) for f in feeds]
    ms = _liteconv(src, spec, work, name)
    rows: dict[str, dict[str, Any]] = {}
    for setting, path in ms.items():
        m = converter.load(path)
        got = [m.run(f) for f in feeds]
        rows[f"liteconv_{setting}"] = {"bytes": path.stat().st_size, **scores(refs, got)}
    feed_files = []
    for i, f in enumerate(feeds):
        np.savez(work / f"{name}_feeds{i}.npz", **f)
        feed_files.append(str(work / f"{name}_feeds{i}.npz"))
    inputs, outputs = list(feeds[0]), [o.name for o in model.graph.output]
    job: dict[str, Any] = {"convert": [], "run": []}
    for setting, flags in MNN_SETTINGS.items():
        mnn = work / f"{name}_{setting}.mnn"
        args = ["-f", "ONNX", "--modelFile", str(src), "--MNNModel", str(mnn)]
        job["convert"].append([*args, "--bizCode", "liteconv", *flags])
        out = work / f"{name}_{setting}_mnn_out.npz"
        job["run"].append(
            {"model": str(mnn), "inputs": inputs, "outputs": outputs, "feeds": feed_files,
             "out": str(out)}
        )  # fmt: skip
    info = run_mnn_job(job, work)
    for setting in MNN_SETTINGS:
        data = np.load(work / f"{name}_{setting}_mnn_out.npz")
        got = [{k: data[f"{i}/{k}"] for k in outputs} for i in range(len(feeds))]
        mnn = work / f"{name}_{setting}.mnn"
        rows[f"mnn_{setting}"] = {"bytes": mnn.stat().st_size, **scores(refs, got)}
    return {"model": name, "isolation": info["isolation"], **rows}


def _print(r: dict[str, Any]) -> None:
    def cell(key: str) -> str:
        return f"{r[key]['bytes'] / 1e6:8.3f} MB {r[key]['cosine']:.6f} d {r[key]['delta']:.4f}"

    print(f"{r['model']}:")
    for setting in ("f32", "fp16", "q8", "q8auto"):
        lc, mn = f"liteconv_{setting}", "mnn_q8" if setting == "q8auto" else f"mnn_{setting}"
        ok = r[lc]["bytes"] <= r[mn]["bytes"]
        print(f"  {setting:<5} liteconv {cell(lc)} | MNN {cell(mn)} | .ms <= .mnn: {ok}")


def markdown(results: list[dict[str, Any]]) -> str:
    """The comparison as a markdown table (MB and worst output cosine per file)."""

    def cell(r: dict[str, Any], key: str) -> str:
        c = r[key]
        return f"{c['bytes'] / 1e6:.3f} MB @ {c['cosine']:.6f} / {c.get('delta', float('nan')):.4f}"

    lines = [
        "| model | liteconv --fp16 | MNN --fp16 | liteconv 8-bit (per channel) | "
        "liteconv 8-bit (auto_tune) | MNN --weightQuantBits 8 |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        cells = [cell(r, k) for k in ("liteconv_fp16", "mnn_fp16", "liteconv_q8",
                                      "liteconv_q8auto", "mnn_q8")]  # fmt: skip
        lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        _worker(Path(args.worker))
        return
    import importlib.util

    if importlib.util.find_spec("_tools") is None:  # finds MNN's converter without importing it
        raise SystemExit("MNN is not installed: run `make install-bench` first")
    before = _distributions()
    table = specs()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in model_names(args.models):
            folder = Path(tmp) / name
            folder.mkdir()
            results.append(bench_model(name, table[name], folder))
            _print(results[-1])
    after = _distributions()
    if before != after:
        raise SystemExit(f"installed packages changed: {sorted(set(after) ^ set(before))}")
    print(f"installed distributions unchanged ({len(after)}); MNN ran with: "
          f"{results[0]['isolation'] if results else '-'}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print(markdown(results))


if __name__ == "__main__":
    main()
