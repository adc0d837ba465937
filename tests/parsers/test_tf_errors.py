"""TF front end on bad input: one clear line and exit code 2 from the ``convert`` CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("tensorflow")

from benchmarks.models_tf import freeze_function, keras  # noqa: E402
from converter.cli import convert_command  # noqa: E402
from parsers.errors import BadModelError, InputShapeError  # noqa: E402
from parsers.tf import parse_tf  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    keras()
    import tensorflow as tf

    root = tmp_path_factory.mktemp("tf_bad")

    class Doubler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([2], tf.float32)])
        def predict(self, x: Any) -> Any:
            return x * 2.0

    class Untraced(tf.Module):
        @tf.function
        def __call__(self, x: Any) -> Any:
            return x + 1.0

    m = Doubler()
    tf.saved_model.save(m, str(root / "predict_only"), signatures={"predict": m.predict})
    tf.saved_model.save(Untraced(), str(root / "no_signature"))
    good = freeze_function(lambda x: tf.nn.relu(x) * 3.0, [((2, 3), "float32")], root / "g.pb")
    data = good.read_bytes()
    (root / "truncated.pb").write_bytes(data[: len(data) * 2 // 3])
    (root / "empty.pb").write_bytes(b"")
    (root / "not_saved_model").mkdir()
    return {
        "predict_only": root / "predict_only",
        "no_signature": root / "no_signature",
        "good": good,
        "truncated": root / "truncated.pb",
        "empty": root / "empty.pb",
        "folder": root / "not_saved_model",
    }


def _cli(path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as info:
        convert_command(["--fmk=TF", f"--modelFile={path}", f"--outputFile={tmp_path / 'o'}"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    return err[0]


def test_missing_serving_signature_names_the_others(models, tmp_path, capsys) -> None:
    line = _cli(models["predict_only"], tmp_path, capsys)
    assert "serving_default" in line and "predict" in line
    line = _cli(models["no_signature"], tmp_path, capsys)
    assert "serving_default" in line and "none" in line


@pytest.mark.parametrize("case", ["truncated", "empty", "folder"])
def test_unreadable_model(models, tmp_path, capsys, case: str) -> None:
    line = _cli(models[case], tmp_path, capsys)
    assert str(models[case]) in line
    with pytest.raises(BadModelError):
        parse_tf(models[case])


def test_input_shapes_must_name_an_input(models) -> None:
    with pytest.raises(InputShapeError, match="no model input named 'x'"):
        parse_tf(models["good"], input_shapes={"x": [2, 3]})
    with pytest.raises(InputShapeError, match="dim 1 is 3"):
        parse_tf(models["good"], input_shapes={"input": [2, 4]})
