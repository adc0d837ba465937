"""The conversion pipeline: parse -> passes -> write -> (read back -> verify).

One direction only: the parser never calls a pass, passes never see the
source framework, the writer never optimizes, and verification runs the
``.ms`` as written to disk, read back by the reader.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from converter.errors import ConvertError, UsageError, VerificationFailed
from converter.verify import Thresholds, VerifyReport, verify_graph
from ir import Graph

__all__ = [
    "FMKS",
    "ConvertResult",
    "convert",
    "detect_fmk",
    "mark_trainable_weights",
    "optimize_graph",
    "pass_summary",
    "parse_input_shapes",
    "parse_model",
]

logger = logging.getLogger(__name__)

FMKS = ("ONNX", "TFLITE", "TF", "CAFFE")
_SUFFIX_FMK = {".onnx": "ONNX", ".tflite": "TFLITE", ".pb": "TF", ".prototxt": "CAFFE"}
# a SavedModel is a folder holding saved_model.pb

Progress = Callable[[str], None]


@dataclass
class ConvertResult:
    output: Path
    graph: Graph
    nodes_before: int
    nodes_after: int
    passes: list[dict[str, Any]]
    seconds: dict[str, float]
    verify: VerifyReport | None = None
    files: list[Path] = field(default_factory=list)
    compression: dict[str, Any] = field(default_factory=dict)
    unfused: dict[str, Any] = field(default_factory=dict)


def parse_input_shapes(spec: str | Mapping[str, Any] | None) -> dict[str, list[int]] | None:
    """``"a:1,3,224,224;b:1,128"`` -> {"a": [1, 3, 224, 224], "b": [1, 128]}."""
    if spec is None or spec == "":
        return None
    if isinstance(spec, Mapping):
        return {str(k): [int(d) for d in v] for k, v in spec.items()}
    shapes: dict[str, list[int]] = {}
    for part in str(spec).split(";"):
        part = part.strip()
        if not part:
            continue
        name, sep, dims = part.rpartition(":")
        if not sep or not name:
            raise UsageError(f"--inputShape entry {part!r} is not NAME:D1,D2,...")
        try:
            shapes[name] = [int(d) for d in dims.split(",") if d.strip() != ""]
        except ValueError:
            raise UsageError(f"--inputShape entry {part!r}: dims must be integers") from None
    return shapes


def detect_fmk(path: str | os.PathLike, fmk: str | None) -> str:
    if fmk:
        up = fmk.upper()
        if up not in FMKS:
            raise UsageError(f"unknown --fmk={fmk!r}: choose one of {', '.join(FMKS)}")
        return up
    suffix = Path(path).suffix.lower()
    if suffix in _SUFFIX_FMK:
        return _SUFFIX_FMK[suffix]
    if (Path(path) / "saved_model.pb").exists():
        return "TF"
    raise UsageError(f"cannot tell the framework of {path}: pass --fmk ({', '.join(FMKS)})")


def parse_model(
    path: str | os.PathLike,
    fmk: str,
    input_shapes: dict[str, list[int]] | None = None,
    weight_file: str | os.PathLike | None = None,
) -> Graph:
    """Lower a model file into the IR with the front end of ``fmk``.

    ``weight_file`` is Caffe's ``.caffemodel`` (``--weightFile``); other
    frameworks refuse it.
    """
    p = Path(path)
    if not p.exists():
        raise ConvertError(f"model file not found: {p}")
    if p.is_dir() and fmk != "TF":
        raise ConvertError(f"{p} is a folder, not a model file")
    if weight_file is not None and fmk != "CAFFE":
        raise UsageError("--weightFile is for --fmk=CAFFE (the .caffemodel)")
    if fmk == "ONNX":
        from parsers.onnx import parse_onnx

        return parse_onnx(p, input_shapes=input_shapes)
    if fmk == "TFLITE":
        from parsers.tflite import parse_tflite

        return parse_tflite(p, input_shapes=input_shapes)
    if fmk == "TF":
        from parsers.tf import parse_tf

        return parse_tf(p, input_shapes=input_shapes)
    if fmk == "CAFFE":
        from parsers.caffe import parse_caffe

        if weight_file is None:
            raise UsageError("--fmk=CAFFE needs --weightFile=model.caffemodel")
        if not Path(weight_file).exists():
            raise ConvertError(f"weight file not found: {weight_file}")
        return parse_caffe(p, Path(weight_file), input_shapes=input_shapes)
    raise UsageError(f"unknown --fmk={fmk}")


def _names(spec: str | Sequence[str] | None) -> list[str]:
    """``"a,b"`` or ``["a", "b,c"]`` -> ["a", "b", "c"]."""
    if spec is None:
        return []
    parts = [spec] if isinstance(spec, str) else list(spec)
    return [n.strip() for p in parts for n in str(p).split(",") if n.strip()]


def mark_trainable_weights(
    graph: Graph,
    trainable: str | Sequence[str] | None = None,
    freeze_until: str | None = None,
) -> dict[str, Any] | None:
    """Mark trainable weights (``passes.freeze``); the report, None when nothing is asked."""
    from passes.freeze import FreezeError, mark_trainable

    names = _names(trainable)
    if not names and not freeze_until:
        return None
    try:
        return mark_trainable(graph, names, freeze_until or None).to_dict()
    except FreezeError as exc:
        raise UsageError(str(exc)) from None


def optimize_graph(
    graph: Graph,
    level: str = "full",
    dump_dir: str | os.PathLike | None = None,
    *,
    disable_pass: str | Sequence[str] | None = None,
    trainable: str | Sequence[str] | None = None,
    freeze_until: str | None = None,
) -> Any:
    """Run the ``--optimize`` pipeline; returns the PassManager (records, summary).

    ``level``: none, basic, full (``general`` is full); ``disable_pass``: pass or
    fusion family names (comma-separated string or list); ``trainable`` /
    ``freeze_until``: weights the passes must leave as they are (see
    :func:`mark_trainable_weights`).
    """
    from passes.base import PassContext
    from passes.manager import PassManager
    from passes.pipeline import PipelineError, build_pipeline

    try:
        passes = build_pipeline(level, PassContext(), _names(disable_pass))
    except PipelineError as exc:
        raise UsageError(str(exc)) from None
    mark_trainable_weights(graph, trainable, freeze_until)
    pm = PassManager(passes)
    if dump_dir is not None:
        from converter.onnx_export import save_onnx
        from passes.instruments import dump_instrument

        Path(dump_dir).mkdir(parents=True, exist_ok=True)
        save_onnx(graph, Path(dump_dir) / "00_input.onnx")
        pm.instruments.append(dump_instrument(Path(dump_dir), save_onnx))
    pm.run(graph)
    return pm


def check_output_format(output_format: str | None) -> str | None:
    """``--outputFormat``: None (keep the source layout), NHWC or NCHW."""
    if output_format is None or output_format == "":
        return None
    up = str(output_format).upper()
    if up not in ("NHWC", "NCHW"):
        raise UsageError(f"--outputFormat={output_format}: use NHWC or NCHW")
    return up


def convert_layout(graph: Graph, output_format: str) -> Any:
    """Run spatial ops in ``output_format`` (``passes.layout``); returns the PassManager.

    Graph inputs and outputs keep their layout: Transposes stay at the boundary.
    """
    from passes.layout import layout_passes
    from passes.manager import PassManager

    pm = PassManager(layout_passes(output_format))
    pm.run(graph)
    return pm


def _check_optimize(level: str, disable_pass: str | Sequence[str] | None) -> None:
    """Refuse a bad level or pass name before parsing."""
    from passes.pipeline import PipelineError, build_pipeline

    try:
        build_pipeline(level, None, _names(disable_pass))
    except PipelineError as exc:
        raise UsageError(str(exc)) from None


def pass_summary(pm: Any) -> list[dict[str, Any]]:
    """``pm.summary()`` with per-rule counts (matched/rejected/trainable/fired) on Fusions."""
    from passes.pipeline import rule_stats

    summary = pm.summary()
    rules = rule_stats(pm.passes)
    for entry in summary:
        if entry["pass"] == "Fusions" and rules:
            entry["rules"] = rules
            entry["fired"] = sum(r["fired"] for r in rules.values())
    return summary


def convert(
    model_file: str | os.PathLike,
    fmk: str | None = "ONNX",
    output: str | os.PathLike = "out.ms",
    *,
    weight_file: str | os.PathLike | None = None,
    input_shapes: str | Mapping[str, Any] | None = None,
    optimize: str = "full",
    disable_pass: str | Sequence[str] | None = None,
    trainable: str | Sequence[str] | None = None,
    freeze_until: str | None = None,
    output_format: str | None = None,
    dump_dir: str | os.PathLike | None = None,
    config_file: str | os.PathLike | None = None,
    fp16: str = "off",
    verify: bool = False,
    thresholds: Thresholds | None = None,
    inputs: Mapping[str, np.ndarray] | str | os.PathLike | None = None,
    seed: int = 0,
    report: str | os.PathLike | None = None,
    progress: Progress | None = None,
    raise_on_mismatch: bool = True,
    qtable: str | os.PathLike | Mapping[str, str] | None = None,
) -> ConvertResult:
    """Convert ``model_file`` to a ``.ms`` file (``.ms`` appended when missing).

    ``optimize`` is none, basic or full (``general`` = full); ``disable_pass``
    names passes or fusion families to skip; ``trainable`` (weight or node
    names) and ``freeze_until`` (a node name) mark the weights no pass may
    rewrite. ``output_format`` (NHWC or NCHW; None keeps the source layout) runs
    every spatial op in that layout after the optimization pipeline, with
    Transposes only at the graph inputs/outputs. ``config_file`` is a MindSpore
    Lite style config (``converter.config``);
    ``fp16`` is ``off``, ``on`` or ``auto``. With ``verify`` the written file is
    read back, run by the executor and compared with the source framework's
    runtime; a broken tolerance raises :class:`VerificationFailed` (after the
    report is written) unless ``raise_on_mismatch`` is False. ``report`` gets
    the conversion summary (nodes, passes, timings, file sizes, compression,
    ``unfused``: the standalone BN/activation/bias-Add/Transpose nodes left and
    why, see :mod:`passes.unfused`) and, with ``verify``, the verification metrics.
    ``qtable`` (a file written by ``liteconv sensitivity``, or node name -> ``"F32"`` /
    activation_quant_method) refines FULL_QUANT.
    """
    from converter.compress import compress_graph
    from converter.config import load_config
    from converter.ms import read_ms, write_ms

    say = progress or (lambda msg: logger.info("%s", msg))
    fmk = detect_fmk(model_file, fmk)
    out = Path(output)
    if out.suffix != ".ms":
        out = out.with_name(out.name + ".ms")
    shapes = parse_input_shapes(input_shapes)
    feeds = load_feeds(inputs)
    config = load_config(config_file) if config_file is not None else None
    qtable_map = _load_qtable(qtable)
    if qtable_map is not None and (config is None
                                   or config.common_quant_param.quant_type != "FULL_QUANT"):
        raise UsageError("--qtable needs quant_type=FULL_QUANT in --configFile")
    if fp16 not in ("off", "on", "auto"):
        raise UsageError(f"--fp16={fp16}: use on, off or auto")
    _check_optimize(optimize, disable_pass)
    output_format = check_output_format(output_format)
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    graph = parse_model(model_file, fmk, shapes, weight_file)
    seconds["parse"] = time.perf_counter() - t0
    before = sum(1 for _ in graph.all_nodes())
    say(f"parsed {model_file} ({fmk}): {before} nodes in {seconds['parse']:.2f}s")

    freeze = mark_trainable_weights(graph, trainable, freeze_until)
    if freeze is not None:
        say(f"{freeze['trainable_weights']} trainable weights kept as they are")
    t0 = time.perf_counter()
    pm = optimize_graph(graph, optimize, dump_dir, disable_pass=disable_pass)
    seconds["optimize"] = time.perf_counter() - t0
    after = sum(1 for _ in graph.all_nodes())
    say(f"optimized ({optimize}): {before} -> {after} nodes in {seconds['optimize']:.2f}s")
    layout_pm = None
    if output_format is not None:
        t0 = time.perf_counter()
        layout_pm = convert_layout(graph, output_format)
        seconds["layout"] = time.perf_counter() - t0
        after = sum(1 for _ in graph.all_nodes())
        say(f"layout {output_format}: {after} nodes in {seconds['layout']:.2f}s")

    from passes.unfused import summary_line, unfused_report

    unfused = unfused_report(graph, pm.passes)
    say(summary_line(unfused))

    compression: dict[str, Any] = {}
    if config is not None or fp16 != "off":
        t0 = time.perf_counter()
        compression = compress_graph(graph, config, fp16, say, qtable=qtable_map)
        seconds["compress"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    files = write_ms(graph, out)
    seconds["write"] = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in files)
    say(f"wrote {out} ({_human(size)}) in {seconds['write']:.2f}s")

    result = ConvertResult(
        output=out,
        graph=graph,
        nodes_before=before,
        nodes_after=after,
        passes=pass_summary(pm) + (layout_pm.summary() if layout_pm is not None else []),
        seconds=seconds,
        files=list(files),
        compression=compression,
        unfused=unfused,
    )
    summary = {
        "source": str(model_file),
        "fmk": fmk,
        "model": str(out),
        "nodes": {"parsed": before, "optimized": after},
        "passes": result.passes,
        "seconds": seconds,
        "files": {f.name: f.stat().st_size for f in result.files},
        "compression": compression,
        "unfused": unfused,
    }
    if freeze is not None:
        summary["trainable"] = freeze
    if verify:
        t0 = time.perf_counter()
        written = read_ms(out)
        extra = {"weight_file": weight_file} if weight_file is not None else {}
        result.verify = verify_graph(
            written, model_file, fmk, out, thresholds or Thresholds(), feeds, seed, **extra
        )
        seconds["verify"] = time.perf_counter() - t0
        for line in result.verify.lines():
            say(line)
    if report is not None:
        data = {**(result.verify.to_dict() if result.verify else {}), "conversion": summary}
        write_text_atomic(Path(report), json.dumps(data, indent=2, default=str))
    if result.verify is not None and not result.verify.passed and raise_on_mismatch:
        bad = [m.name for m in result.verify.outputs if not m.passed]
        raise VerificationFailed(f"verification failed on output(s): {', '.join(bad)}")
    return result


def _load_qtable(
    qtable: str | os.PathLike | Mapping[str, str] | None,
) -> dict[str, str] | None:
    if qtable is None:
        return None
    if isinstance(qtable, Mapping):
        return {str(k): str(v) for k, v in qtable.items()}
    from passes.quant.sensitivity import read_qtable

    return read_qtable(qtable)


def load_optimized(
    model_file: str | os.PathLike,
    fmk: str | None = None,
    *,
    weight_file: str | os.PathLike | None = None,
    input_shapes: str | Mapping[str, Any] | None = None,
    optimize: str = "full",
    disable_pass: str | Sequence[str] | None = None,
    output_format: str | None = None,
) -> Graph:
    """The graph ``convert`` would compress: parsed, optimized, laid out (same node names)."""
    fmk = detect_fmk(model_file, fmk)
    _check_optimize(optimize, disable_pass)
    output_format = check_output_format(output_format)
    graph = parse_model(model_file, fmk, parse_input_shapes(input_shapes), weight_file)
    optimize_graph(graph, optimize, disable_pass=disable_pass)
    if output_format is not None:
        convert_layout(graph, output_format)
    return graph


def load_feeds(
    inputs: Mapping[str, np.ndarray] | str | os.PathLike | None,
) -> dict[str, np.ndarray] | None:
    """Input data from a mapping or an ``.npz`` keyed by graph input names."""
    if inputs is None:
        return None
    if isinstance(inputs, Mapping):
        return {k: np.asarray(v) for k, v in inputs.items()}
    p = Path(inputs)
    if not p.exists():
        raise ConvertError(f"input data file not found: {p}")
    try:
        with np.load(p, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except Exception as exc:  # NumPy raises several types for bad archives
        raise ConvertError(f"cannot read input data {p}: not a valid .npz ({exc})") from None


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"
