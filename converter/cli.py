"""Command line: ``convert`` (MindSpore Lite converter_lite spellings) and ``liteconv``.

    convert --fmk=ONNX in.onnx out.ms --verify
    convert --fmk=ONNX --modelFile=in.onnx --outputFile=out        # writes out.ms
    liteconv convert ...      (same command; ImageMagick also installs a `convert`)
    liteconv verify in.onnx out.ms [--inputs feeds.npz] [--report r.json]
    liteconv compare in.onnx out.ms [--plot layers.png] [--json layers.json]
    liteconv run out.ms --inputs feeds.npz --outputs out.npz
    liteconv inspect out.ms
    liteconv sensitivity in.onnx --configFile full.ini --target-cos 0.99 --qtable q.qtable

Errors print one line on stderr. Exit codes: 0 success, 1 verification
failed, 2 bad input or unsupported model, 3 internal error (a liteconv bug;
``LITECONV_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np

from converter.errors import ConvertError, UsageError, VerificationFailed

__all__ = ["cli", "convert_command", "main"]

EXIT_VERIFY = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception types whose message is meant for the user (exit code 2)."""
    from converter.executor.registry import UnsupportedKernel
    from converter.ms import MsFormatError
    from ir import IRError

    kinds: list[type[BaseException]] = [
        ConvertError, MsFormatError, UnsupportedKernel, IRError, OSError, click.ClickException,
    ]  # fmt: skip
    try:
        from parsers import errors as perr

        kinds.extend(
            obj
            for obj in vars(perr).values()
            if isinstance(obj, type) and issubclass(obj, Exception)
        )
    except ImportError:  # pragma: no cover
        pass
    return tuple(kinds)


def _fail(prog: str, message: str, code: int) -> None:
    click.echo(f"{prog}: error: {' '.join(str(message).split())}", err=True)
    sys.exit(code)


def _run_safely(prog: str, fn: Callable[[], Any]) -> None:
    """Run a click command body; map exceptions to one stderr line and an exit code."""
    from converter.executor.runtime import ExecutionError

    try:
        fn()
    except VerificationFailed as exc:
        _fail(prog, str(exc), EXIT_VERIFY)
    except ExecutionError as exc:
        _fail(prog, f"the converted model failed to run: {exc}", EXIT_VERIFY)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        _fail(prog, "aborted", EXIT_BAD_INPUT)
    except click.ClickException as exc:
        _fail(prog, exc.format_message(), EXIT_BAD_INPUT)
    except _user_errors() as exc:
        if isinstance(exc, FileNotFoundError) and exc.filename:
            _fail(prog, f"file not found: {exc.filename}", EXIT_BAD_INPUT)
        if isinstance(exc, OSError) and exc.strerror and exc.filename:
            _fail(prog, f"{exc.strerror}: {exc.filename}", EXIT_BAD_INPUT)
        _fail(prog, str(exc) or type(exc).__name__, EXIT_BAD_INPUT)
    except MemoryError:
        _fail(prog, "out of memory", EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        _fail(prog, "interrupted", 130)
    except Exception as exc:  # a bug: keep it to one line unless debugging
        if os.environ.get("LITECONV_DEBUG"):
            traceback.print_exc()
        _fail(
            prog,
            f"internal error ({type(exc).__name__}: {exc}); rerun with LITECONV_DEBUG=1 "
            "for the traceback and please report it",
            EXIT_INTERNAL,
        )


# -- shared options ------------------------------------------------------------------
def _threshold_options(fn: Callable) -> Callable:
    fn = click.option(
        "--cosineDistanceThreshold",
        "cosine",
        type=float,
        default=0.9999,
        show_default=True,
        help="Minimum cosine similarity per output.",
    )(fn)
    fn = click.option(
        "--accuracyThreshold",
        "accuracy",
        type=float,
        default=None,
        help="Maximum mean bias in percent (MindSpore Lite benchmark's metric).",
    )(fn)
    fn = click.option("--atol", type=float, default=None, help="Elementwise absolute tolerance.")(
        fn
    )
    fn = click.option("--rtol", type=float, default=None, help="Elementwise relative tolerance.")(
        fn
    )
    fn = click.option(
        "--inputs",
        "inputs",
        type=click.Path(dir_okay=False),
        default=None,
        help="Input data (.npz keyed by input name); random (seeded) otherwise.",
    )(fn)
    fn = click.option("--seed", type=int, default=0, show_default=True, help="Random input seed.")(
        fn
    )
    fn = click.option(
        "--report", type=click.Path(dir_okay=False), default=None, help="Write a JSON report."
    )(fn)
    return fn


def _thresholds(cosine: float, accuracy: float | None, atol: float | None, rtol: float | None):
    from converter.verify import Thresholds

    return Thresholds(cosine=cosine, accuracy_pct=accuracy, atol=atol, rtol=rtol)


def _say(quiet: bool) -> Callable[[str], None]:
    return (lambda _m: None) if quiet else (lambda m: click.echo(m, err=True))


# -- convert ----------------------------------------------------------------------------
@click.command(
    "convert",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.argument("model", required=False, type=click.Path(dir_okay=True))
@click.argument("output", required=False, type=click.Path(dir_okay=False))
@click.option("--fmk", default=None, help="Source framework: ONNX, TFLITE, TF, CAFFE.")
@click.option("--modelFile", "model_file", default=None, help="Same as MODEL.")
@click.option("--outputFile", "output_file", default=None, help="Same as OUTPUT (.ms appended).")
@click.option(
    "--weightFile", "weight_file", default=None, help="Caffe weights (.caffemodel), --fmk=CAFFE."
)
@click.option(
    "--inputShape",
    "input_shape",
    default=None,
    help='Pin input shapes: "in1:1,3,224,224;in2:1,128".',
)
@click.option(
    "--optimize",
    type=click.Choice(["none", "basic", "full", "general"]),
    default="full",
    show_default=True,
    help="none: shape inference only; basic: + folding, no-op/dead-node removal, CSE; "
    "full (= general): + fusions.",
)
@click.option(
    "--disable-pass",
    "disable_pass",
    default=None,
    help="Comma-separated passes or fusion families to skip (e.g. conv,FoldConstants).",
)
@click.option(
    "--trainable",
    default=None,
    help="Comma-separated weight or node names kept trainable (never folded or fused).",
)
@click.option(
    "--freeze-until",
    "freeze_until",
    default=None,
    help="Node name: it and the nodes before it are frozen, later weights stay trainable.",
)
@click.option(
    "--outputFormat",
    "output_format",
    type=click.Choice(["NHWC", "NCHW"], case_sensitive=False),
    default=None,
    help="Run every spatial op in this layout (Transposes only at the graph inputs and "
    "outputs). Default: keep the source model's layout.",
)
@click.option(
    "--dump-dir",
    "dump_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Write the graph after every pass as ONNX (open in Netron).",
)
@click.option(
    "--configFile",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="MindSpore Lite style config: [common_quant_param], [full_quant_param], ...",
)
@click.option(
    "--fp16",
    type=click.Choice(["on", "off", "auto"]),
    default="off",
    show_default=True,
    help="Store weights and compute in float16 (auto: keep sensitive ops in float32).",
)
@click.option(
    "--qtable",
    type=click.Path(dir_okay=False),
    default=None,
    help="FULL_QUANT: ops kept in float and per-op methods (from `liteconv sensitivity`).",
)
@click.option("--verify", is_flag=True, help="Run the .ms and the source model; compare outputs.")
@_threshold_options
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
def convert_cmd(
    model: str | None,
    output: str | None,
    fmk: str | None,
    model_file: str | None,
    output_file: str | None,
    weight_file: str | None,
    input_shape: str | None,
    optimize: str,
    disable_pass: str | None,
    trainable: str | None,
    freeze_until: str | None,
    output_format: str | None,
    dump_dir: str | None,
    config_file: str | None,
    fp16: str,
    qtable: str | None,
    verify: bool,
    cosine: float,
    accuracy: float | None,
    atol: float | None,
    rtol: float | None,
    inputs: str | None,
    seed: int,
    report: str | None,
    quiet: bool,
) -> None:
    """Convert MODEL (ONNX, ...) to a MindSpore Lite .ms file OUTPUT."""
    from converter.pipeline import convert

    src = _one_of(model, model_file, "MODEL", "--modelFile")
    dst = _one_of(output, output_file, "OUTPUT", "--outputFile")
    if src is None:
        raise UsageError("no model given: convert --fmk=ONNX MODEL OUTPUT.ms")
    if dst is None:
        raise UsageError("no output given: convert --fmk=ONNX MODEL OUTPUT.ms")
    say = _say(quiet)
    result = convert(
        src,
        fmk=fmk,
        output=dst,
        weight_file=weight_file,
        input_shapes=input_shape,
        optimize=optimize,
        disable_pass=disable_pass,
        trainable=trainable,
        freeze_until=freeze_until,
        output_format=output_format,
        dump_dir=dump_dir,
        config_file=config_file,
        fp16=fp16,
        qtable=qtable,
        verify=verify,
        thresholds=_thresholds(cosine, accuracy, atol, rtol),
        inputs=inputs,
        seed=seed,
        report=report,
        progress=say,
    )
    if verify:
        say("verification passed")
    click.echo("CONVERT RESULT SUCCESS:0")
    del result


def _one_of(positional: str | None, flag: str | None, pname: str, fname: str) -> str | None:
    if positional and flag and positional != flag:
        raise UsageError(f"{pname} and {fname} disagree ({positional} vs {flag})")
    return positional or flag


# -- verify -----------------------------------------------------------------------------
@click.command("verify", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("source", type=click.Path(dir_okay=True))
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--fmk", default=None, help="Framework of SOURCE (from its suffix otherwise).")
@click.option("--weightFile", "weight_file", default=None, help="Caffe weights (.caffemodel).")
@click.option("--inputShape", "input_shape", default=None, help="Pin input shapes.")
@_threshold_options
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
def verify_cmd(
    source: str,
    model: str,
    fmk: str | None,
    weight_file: str | None,
    input_shape: str | None,
    cosine: float,
    accuracy: float | None,
    atol: float | None,
    rtol: float | None,
    inputs: str | None,
    seed: int,
    report: str | None,
    quiet: bool,
) -> None:
    """Compare MODEL.ms (executor) with SOURCE (its framework's runtime)."""
    from converter.ms import read_ms
    from converter.pipeline import (
        detect_fmk,
        load_feeds,
        parse_input_shapes,
        write_text_atomic,
    )
    from converter.verify import verify_graph

    fmk = detect_fmk(source, fmk)
    if not Path(source).exists():
        raise ConvertError(f"model file not found: {source}")
    graph = read_ms(Path(model))
    feeds = load_feeds(inputs)
    shapes = parse_input_shapes(input_shape)
    if shapes:
        _pin_shapes(graph, shapes)
    extra = {"weight_file": weight_file} if weight_file else {}
    rep = verify_graph(
        graph, source, fmk, model, _thresholds(cosine, accuracy, atol, rtol), feeds, seed, **extra
    )
    say = _say(quiet)
    for line in rep.lines():
        say(line)
    if report:
        write_text_atomic(Path(report), rep.to_json())
    if not rep.passed:
        bad = [m.name for m in rep.outputs if not m.passed]
        raise VerificationFailed(f"verification failed on output(s): {', '.join(bad)}")
    click.echo("VERIFY RESULT SUCCESS:0")


def _pin_shapes(graph: Any, shapes: dict[str, list[int]]) -> None:
    by_name = {v.name: v for v in graph.inputs}
    for name, dims in shapes.items():
        if name not in by_name:
            raise UsageError(f"--inputShape names {name!r}, not an input ({', '.join(by_name)})")
        by_name[name].shape = tuple(dims)


# -- compare ------------------------------------------------------------------------------
@click.command("compare", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("source", type=click.Path(dir_okay=True))
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--fmk", default=None, help="Framework of SOURCE (from its suffix otherwise).")
@click.option("--weightFile", "weight_file", default=None, help="Caffe weights (.caffemodel).")
@click.option("--inputShape", "input_shape", default=None, help="Pin input shapes.")
@click.option(
    "--inputs", type=click.Path(dir_okay=False), default=None,
    help="Input data (.npz keyed by input name); random (seeded) otherwise.",
)  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True, help="Random input seed.")
@click.option(
    "--threshold", type=float, default=0.999, show_default=True,
    help="Cosine below which a layer diverges (and an output fails).",
)  # fmt: skip
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Write the per-layer table as JSON.")  # fmt: skip
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Write cosine / relative error per layer as a PNG (needs matplotlib).")
@click.option("--top", type=int, default=None,
              help="Print only the N layers with the largest cosine drop.")  # fmt: skip
def compare_cmd(
    source: str,
    model: str,
    fmk: str | None,
    weight_file: str | None,
    input_shape: str | None,
    inputs: str | None,
    seed: int,
    threshold: float,
    json_path: str | None,
    plot_path: str | None,
    top: int | None,
) -> None:
    """Per-layer comparison of MODEL.ms with SOURCE: names the first diverging layer."""
    from converter.compare import compare_model, write_plot
    from converter.ms import read_ms
    from converter.pipeline import detect_fmk, load_feeds, parse_input_shapes, write_text_atomic

    if not 0.0 < threshold <= 1.0:
        raise UsageError(f"--threshold must be in (0, 1], got {threshold}")
    if top is not None and top < 1:
        raise UsageError(f"--top must be at least 1, got {top}")
    fmk = detect_fmk(source, fmk)
    if not Path(source).exists():
        raise ConvertError(f"model file not found: {source}")
    graph = read_ms(Path(model))
    shapes = parse_input_shapes(input_shape)
    if shapes:
        _pin_shapes(graph, shapes)
    extra = {"weight_file": weight_file} if weight_file else {}
    rep = compare_model(graph, source, fmk, model, threshold, load_feeds(inputs), seed, **extra)
    for line in rep.lines(top):
        click.echo(line)
    if json_path:
        write_text_atomic(Path(json_path), rep.to_json())
    if plot_path:
        write_plot(rep, plot_path)
    if not rep.passed:
        raise VerificationFailed(
            f"output(s) below cosine {threshold}: {', '.join(rep.failed_outputs)}"
        )


# -- run ----------------------------------------------------------------------------------
@click.command("run", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--inputs", type=click.Path(dir_okay=False), default=None, help="Input .npz.")
@click.option("--outputs", type=click.Path(dir_okay=False), default=None, help="Output .npz.")
@click.option("--inputShape", "input_shape", default=None, help="Shapes for random inputs.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random input seed.")
def run_cmd(
    model: str, inputs: str | None, outputs: str | None, input_shape: str | None, seed: int
) -> None:
    """Run MODEL.ms in the NumPy executor (random inputs unless --inputs)."""
    from converter.model import load
    from converter.pipeline import load_feeds, parse_input_shapes
    from converter.verify import make_inputs

    m = load(model)
    shapes = parse_input_shapes(input_shape)
    if shapes:
        _pin_shapes(m.graph, shapes)
    feeds = make_inputs(m.graph.inputs, seed=seed, feeds=load_feeds(inputs))
    result = m.run(feeds)
    for name, arr in result.items():
        arr = np.asarray(arr)
        stats = ""
        if arr.size and arr.dtype.kind in "biuf":
            a = arr.astype(np.float64)
            stats = f" min={a.min():.4g} max={a.max():.4g} mean={a.mean():.4g}"
        click.echo(f"{name}: {arr.dtype} {list(arr.shape)}{stats}")
    if outputs:
        _save_npz_atomic(Path(outputs), result)


def _save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.npz")
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# -- inspect ------------------------------------------------------------------------------
@click.command("inspect", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.option(
    "--tensors", "list_tensors", is_flag=True,
    help="List every constant: dtype, bits, compression, stored vs raw bytes.",
)  # fmt: skip
def inspect_cmd(model: str, as_json: bool, list_tensors: bool) -> None:
    """Summarize MODEL.ms: ops, inputs/outputs, tensors, weight bytes (stored vs raw)."""
    from converter.ms import read_ms

    graph = read_ms(Path(model))
    info = summarize(graph)
    info["file"] = model
    info["file_bytes"] = Path(model).stat().st_size
    if not list_tensors:
        info.pop("constants")
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"model: {model} ({info['file_bytes']} bytes)")
    for key in ("inputs", "outputs"):
        click.echo(f"{key}:")
        for t in info[key]:
            click.echo(f"  {t['name']}: {t['dtype']} {t['shape']}")
    click.echo(
        f"nodes: {info['nodes']}  subgraphs: {info['subgraphs']}  tensors: {info['tensors']}"
    )
    click.echo("ops:")
    for op_name, n in info["ops"].items():
        click.echo(f"  {op_name:<28} {n}")
    click.echo("weights:")
    for dt, b in info["weight_bytes"].items():
        click.echo(f"  {dt:<10} {b} bytes")
    if list_tensors:
        click.echo(f"  {'tensor':<40} {'dtype':<8} {'bits':>4} {'compression':<26} stored / raw")
        for c in info["constants"]:
            bits = "" if c["bits"] is None else c["bits"]
            kind = c["compression"] + (f" ({c['coding']})" if c.get("coding") else "")
            click.echo(
                f"  {c['name'][:40]:<40} {c['dtype']:<8} {bits:>4} {kind:<26} "
                f"{c['stored_bytes']} / {c['raw_bytes']}"
            )
    tot = info["weight_totals"]
    ratio = tot["raw_bytes"] / tot["stored_bytes"] if tot["stored_bytes"] else 1.0
    click.echo(
        f"total: {tot['stored_bytes']} bytes stored, {tot['raw_bytes']} raw ({ratio:.2f}x); "
        f"{tot['quantized']} quantized tensors"
        + "".join(f", {k} {v}" for k, v in tot["by_compression"].items())
    )


def summarize(graph: Any) -> dict[str, Any]:
    def tinfo(v: Any) -> dict[str, Any]:
        shape = None if v.shape is None else ["?" if d is None else d for d in v.shape]
        return {"name": v.name, "dtype": v.dtype.name.lower(), "shape": shape}

    tensors: dict[int, Any] = {}
    for g in graph.all_graphs():
        for v in g.values():
            tensors[id(v)] = v
    weights: Counter[str] = Counter()
    constants = []
    by_kind: Counter[str] = Counter()
    for v in tensors.values():
        if v.is_const:
            raw = int(v.const.nbytes) if v.const.dtype != object else 0
            weights[v.dtype.name.lower()] += raw
            coded = "quant_codes" in v.meta and v.quant is not None
            kind = v.meta.get("ms_compression", "NONE")
            stored = int(v.meta.get("ms_stored_bytes", raw))
            by_kind[kind] += 1
            constants.append(
                {
                    **tinfo(v),
                    "bits": int(v.quant.num_bits) if coded else None,
                    "compression": kind,
                    **({"coding": v.meta["ms_coding"]} if "ms_coding" in v.meta else {}),
                    "stored_bytes": stored,
                    "raw_bytes": raw,
                }
            )
    ops = Counter(n.op for n in graph.all_nodes())
    return {
        "inputs": [tinfo(v) for v in graph.inputs],
        "outputs": [tinfo(v) for v in graph.outputs],
        "nodes": sum(ops.values()),
        "subgraphs": sum(1 for _ in graph.all_graphs()) - 1,
        "tensors": len(tensors),
        "ops": dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
        "weight_bytes": dict(sorted(weights.items())),
        "weight_totals": {
            "stored_bytes": sum(c["stored_bytes"] for c in constants),
            "raw_bytes": sum(c["raw_bytes"] for c in constants),
            "quantized": sum(1 for c in constants if c["bits"] is not None),
            "by_compression": dict(sorted(by_kind.items())),
        },
        "constants": sorted(constants, key=lambda c: -c["raw_bytes"]),
    }


# -- sensitivity --------------------------------------------------------------------------
@click.command("sensitivity", context_settings={"help_option_names": ["-h", "--help"],
                                                "max_content_width": 100})
@click.argument("model", type=click.Path(dir_okay=True))
@click.option("--fmk", default=None, help="Source framework: ONNX, TFLITE, TF, CAFFE.")
@click.option("--weightFile", "weight_file", default=None, help="Caffe weights (.caffemodel).")
@click.option("--inputShape", "input_shape", default=None, help="Pin input shapes (as convert).")
@click.option("--optimize", type=click.Choice(["none", "basic", "full", "general"]),
              default="full", show_default=True, help="As convert (node names must match).")
@click.option("--disable-pass", "disable_pass", default=None, help="As convert.")
@click.option("--outputFormat", "output_format", default=None, help="As convert.")
@click.option("--configFile", "config_file", type=click.Path(dir_okay=False), required=True,
              help="quant_type=FULL_QUANT with [data_preprocess_param] calibration data.")
@click.option("--inference-data", "inference_data", default=None,
              help="Folder (or name:folder,...) of inference samples, or 'random'; default: "
              "the first --inference-size calibration samples.")
@click.option("--inference-size", "inference_size", type=int, default=30, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of random samples.")
@click.option("--max-float-layers", "max_float_layers", type=int, default=None,
              help="Keep at most N ops in float.")
@click.option("--target-cos", "target_cos", type=float, default=None,
              help="Add ops to the float list until the int8 output cosine reaches this.")
@click.option("--mode", type=click.Choice(["full", "greedy"]), default="full",
              show_default=True,
              help="full: one op more at a time; greedy: bisection over the ranked list.")
@click.option("--screen", type=int, default=8, show_default=True,
              help="Samples every method runs on before the best one runs on all (0: all).")
@click.option("--jobs", type=int, default=0, help="Worker processes (default: CPU count).")
@click.option("--qtable", type=click.Path(dir_okay=False), required=True,
              help="Output qtable (convert --qtable).")
@click.option("--calibration-table", "calibration_table", type=click.Path(dir_okay=False),
              default=None, help="Output calibration table (default: QTABLE with .cali).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Write the full report (every op, every method) as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
def sensitivity_cmd(
    model: str,
    fmk: str | None,
    weight_file: str | None,
    input_shape: str | None,
    optimize: str,
    disable_pass: str | None,
    output_format: str | None,
    config_file: str,
    inference_data: str | None,
    inference_size: int,
    seed: int,
    max_float_layers: int | None,
    target_cos: float | None,
    mode: str,
    screen: int,
    jobs: int,
    qtable: str,
    calibration_table: str | None,
    json_path: str | None,
    quiet: bool,
) -> None:
    """Rank ops by their int8 error (each op alone, every method); write a qtable."""
    import dataclasses

    from converter.config import load_config
    from converter.pipeline import load_optimized, write_text_atomic
    from passes.quant.sensitivity import run_sensitivity, summary_lines

    config = load_config(config_file)
    say = _say(quiet)
    if jobs < 0:
        raise UsageError(f"--jobs must be >= 0, got {jobs}")
    graph = load_optimized(model, fmk, weight_file=weight_file, input_shapes=input_shape,
                           optimize=optimize, disable_pass=disable_pass,
                           output_format=output_format)
    report = run_sensitivity(
        graph,
        dataclasses.asdict(config.common_quant_param),
        dataclasses.asdict(config.full_quant_param),
        dataclasses.asdict(config.data_preprocess_param),
        qtable,
        inference_data=inference_data,
        inference_size=inference_size,
        seed=seed,
        mode=mode,
        target_cos=target_cos,
        max_float_layers=max_float_layers,
        calibration_table=calibration_table,
        jobs=jobs,
        screen=screen,
        say=say,
    )
    if json_path:
        write_text_atomic(Path(json_path), json.dumps(report, indent=2))
    for line in summary_lines(report):
        say(line)
    click.echo("SENSITIVITY RESULT SUCCESS:0")


# -- entry points ---------------------------------------------------------------------------
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="liteconv", prog_name="liteconv")
def cli() -> None:
    """liteconv: convert models to MindSpore Lite .ms, verify, run and inspect them."""


for _cmd in (convert_cmd, verify_cmd, compare_cmd, run_cmd, inspect_cmd, sensitivity_cmd):
    cli.add_command(_cmd)


def _entry(command: click.Command, prog: str, args: Sequence[str] | None) -> None:
    argv = list(sys.argv[1:] if args is None else args)
    # NumPy's RuntimeWarnings (0/0, mean of an empty slice) would print source lines
    # to stderr; what matters reaches the user as NaN/Inf in the verify table instead.
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    _run_safely(
        prog, lambda: command.main(args=argv, prog_name=prog, standalone_mode=False)
    )
    sys.exit(0)


def main(args: Sequence[str] | None = None) -> None:
    """The ``liteconv`` console script."""
    _entry(cli, "liteconv", args)


def convert_command(args: Sequence[str] | None = None) -> None:
    """The ``convert`` console script (converter_lite's spelling)."""
    _entry(convert_cmd, "convert", args)


if __name__ == "__main__":  # pragma: no cover
    main()
