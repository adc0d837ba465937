"""CLI: spellings, outputs, and one-line errors with the documented exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from converter.cli import convert_command, main

BIN = Path(sys.executable).parent


def _small_model(path: Path, op: str = "Relu") -> Path:
    w = numpy_helper.from_array(np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["x", "w"], ["s"], name="add"),
            helper.make_node(op, ["s"], ["y"], name="act"),
        ],
        "small",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return path


def _call(entry, args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        entry(args)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_convert_positional_verify_and_report(tmp_path: Path, capsys):
    src = _small_model(tmp_path / "m.onnx")
    code, out, err = _call(
        convert_command,
        ["--fmk=ONNX", str(src), str(tmp_path / "m.ms"), "--verify", "--inputShape", "x:3,4",
         "--report", str(tmp_path / "r.json")],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert "CONVERT RESULT SUCCESS:0" in out
    assert "cosine" in err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["passed"] and report["outputs"][0]["name"] == "y"
    assert report["inputs"]["x"]["shape"] == [3, 4]


def test_mindspore_spelling_appends_ms(tmp_path: Path, capsys):
    src = _small_model(tmp_path / "m.onnx")
    code, out, _ = _call(
        convert_command,
        ["--fmk=ONNX", f"--modelFile={src}", f"--outputFile={tmp_path / 'out'}"],
        capsys,
    )
    assert code == 0 and (tmp_path / "out.ms").exists()


def test_liteconv_convert_is_the_same_command(tmp_path: Path, capsys):
    src = _small_model(tmp_path / "m.onnx")
    code, out, _ = _call(main, ["convert", "--fmk=onnx", str(src), str(tmp_path / "a.ms")], capsys)
    assert code == 0 and "CONVERT RESULT SUCCESS:0" in out


def test_run_and_inspect(tmp_path: Path, capsys):
    src = _small_model(tmp_path / "m.onnx")
    ms = tmp_path / "m.ms"
    assert _call(convert_command, [str(src), str(ms)], capsys)[0] == 0
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.savez(tmp_path / "in.npz", x=x)
    code, out, err = _call(
        main,
        ["run", str(ms), "--inputs", str(tmp_path / "in.npz"),
         "--outputs", str(tmp_path / "o.npz")],  # fmt: skip
        capsys,
    )
    assert code == 0, err
    with np.load(tmp_path / "o.npz") as data:
        assert set(data.files) == {"y"}
    code, out, _ = _call(main, ["inspect", str(ms), "--json"], capsys)
    info = json.loads(out)
    assert info["inputs"][0]["name"] == "x"
    assert info["weight_bytes"]["float"] == 48


# -- bad input: one line on stderr, exit 2, nothing left behind -----------------------------
def _assert_one_line_error(code: int, err: str, expect_code: int, needle: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == expect_code, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert needle.lower() in lines[0].lower(), lines[0]


@pytest.mark.parametrize(
    "case",
    ["missing", "truncated", "garbage", "wrong_fmk", "unsupported", "escape", "not_ms"],
)
def test_bad_input_exits_2_with_one_line(case: str, tmp_path: Path, capsys):
    out_ms = tmp_path / "out.ms"
    src = tmp_path / "m.onnx"
    args: list[str]
    if case == "missing":
        args, needle = [str(tmp_path / "nope.onnx"), str(out_ms)], "not found"
    elif case == "truncated":
        data = _small_model(tmp_path / "full.onnx").read_bytes()
        src.write_bytes(data[: len(data) // 2])
        args, needle = [str(src), str(out_ms)], str(src.name)
    elif case == "garbage":
        src.write_bytes(b"\x00\xffnot a model at all" * 10)
        args, needle = [str(src), str(out_ms)], str(src.name)
    elif case == "wrong_fmk":
        _small_model(src)
        args, needle = ["--fmk=PADDLE", str(src), str(out_ms)], "fmk"
    elif case == "unsupported":
        graph = helper.make_graph(
            [
                helper.make_node("FancyOp", ["x"], ["a"], name="n1", domain="com.example"),
                helper.make_node("OtherOp", ["a"], ["y"], name="n2", domain="com.example"),
            ],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        )
        onnx.save(
            helper.make_model(
                graph,
                opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
            ),
            src,
        )
        args, needle = [str(src), str(out_ms)], "FancyOp"
    elif case == "escape":
        model = onnx.load(_small_model(tmp_path / "base.onnx"))
        t = model.graph.initializer[0]
        t.ClearField("raw_data")
        t.ClearField("float_data")
        t.data_location = TensorProto.EXTERNAL
        entry = t.external_data.add()
        entry.key, entry.value = "location", "../outside.bin"
        onnx.save(model, src)
        args, needle = [str(src), str(out_ms)], "escape"
    else:  # not_ms
        bad = tmp_path / "fake.ms"
        bad.write_bytes(b"definitely not flatbuffers")
        code, _, err = _call(main, ["inspect", str(bad)], capsys)
        _assert_one_line_error(code, err, 2, "fake.ms")
        return
    code, out, err = _call(convert_command, ["--fmk=ONNX", *args] if case != "wrong_fmk" else args,
                           capsys)  # fmt: skip
    _assert_one_line_error(code, err, 2, needle)
    assert not out_ms.exists()
    assert not any(p.name.startswith((".out", "out")) for p in tmp_path.iterdir()), list(
        tmp_path.iterdir()
    )


def test_unsupported_error_lists_every_op(tmp_path: Path, capsys):
    graph = helper.make_graph(
        [
            helper.make_node("FancyOp", ["x"], ["a"], name="n1", domain="com.example"),
            helper.make_node("FancyOp", ["a"], ["b"], name="n2", domain="com.example"),
            helper.make_node("OtherOp", ["b"], ["y"], name="n3", domain="com.example"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    src = tmp_path / "m.onnx"
    onnx.save(
        helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
        ),
        src,
    )
    code, _, err = _call(convert_command, [str(src), str(tmp_path / "o.ms")], capsys)
    assert code == 2
    assert "FancyOp" in err and "OtherOp" in err and err.count("FancyOp") == 1


def test_failed_verification_exits_1_and_keeps_report(tmp_path: Path, capsys):
    src = _small_model(tmp_path / "m.onnx")
    code, _, err = _call(
        convert_command,
        [str(src), str(tmp_path / "o.ms"), "--verify", "--inputShape", "x:3,4",
         "--cosineDistanceThreshold", "1.5", "--report", str(tmp_path / "r.json")],
        capsys,
    )  # fmt: skip
    assert code == 1
    assert "verification failed" in err.splitlines()[-1]
    assert json.loads((tmp_path / "r.json").read_text())["passed"] is False


def test_console_scripts_as_subprocesses(tmp_path: Path):
    src = _small_model(tmp_path / "m.onnx")
    ok = subprocess.run(
        [str(BIN / "convert"), "--fmk=ONNX", str(src), str(tmp_path / "m.ms")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(
        [str(BIN / "liteconv"), "convert", str(tmp_path / "missing.onnx"), str(tmp_path / "x.ms")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def test_dump_dir_writes_each_changed_pass_as_onnx(tmp_path: Path, capsys):
    """--dump-dir: the input graph and the graph after every pass that changed it, as ONNX."""
    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["x"], ["a"], name="id"),
            helper.make_node("Relu", ["a"], ["y"], name="act"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    src = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), src)
    dump = tmp_path / "dump"
    code, _, err = _call(
        convert_command, [str(src), str(tmp_path / "m.ms"), "--dump-dir", str(dump)], capsys
    )
    assert code == 0, err
    files = sorted(p.name for p in dump.glob("*.onnx"))
    assert files[0] == "00_input.onnx" and any("RemoveNoOps" in f for f in files), files
    last = onnx.load(dump / files[-1])
    onnx.checker.check_model(last)
    assert [n.op_type for n in last.graph.node] == ["Relu"]


def _reflect_pad_model(path: Path) -> Path:
    """onnxruntime refuses reflect padding of 2 on a length-1 axis: a symbolic dim set to 1."""
    graph = helper.make_graph(
        [helper.make_node("Pad", ["x", "pads"], ["y"], mode="reflect")],
        "pad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, None])],
        [numpy_helper.from_array(np.array([0, 2, 0, 2], np.int64), "pads")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_reference_failure_on_generated_inputs_is_one_line_exit_2(tmp_path: Path, capsys):
    src = _reflect_pad_model(tmp_path / "pad.onnx")
    code, _, err = _call(convert_command, [str(src), str(tmp_path / "p.ms"), "--verify"], capsys)
    assert code == 2, err
    last = err.strip().splitlines()[-1]
    assert "reference runtime (onnxruntime) failed" in last and "internal error" not in last
    assert "x [1, 1]" in last and "--inputShape" in last
    assert "[E:onnxruntime" not in err  # its own log lines stay quiet
    code, _, err = _call(
        convert_command,
        [str(src), str(tmp_path / "p.ms"), "--verify", "--inputShape", "x:1,8"],
        capsys,
    )
    assert code == 0, err


def test_unknown_name_in_inputs_file_exits_2(tmp_path: Path, capsys):
    src = _small_model(tmp_path / "m.onnx")
    np.savez(tmp_path / "in.npz", x=np.ones((3, 4), np.float32), sr=np.array(16000))
    code, _, err = _call(
        convert_command,
        [str(src), str(tmp_path / "m.ms"), "--verify", "--inputs", str(tmp_path / "in.npz")],
        capsys,
    )
    assert code == 2
    assert "unknown name(s) ['sr']" in err.splitlines()[-1]
