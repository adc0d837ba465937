"""--configFile: MindSpore Lite spellings, typed values, typos refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from converter.config import load_config
from converter.errors import UsageError


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.cfg"
    p.write_text(text)
    return p


def test_mindspore_weight_quant_config_reads_unchanged(tmp_path: Path):
    cfg = load_config(
        _write(
            tmp_path,
            "[common_quant_param]\nquant_type=WEIGHT_QUANT\nbit_num=0\n"
            "min_quant_weight_size=0\nmin_quant_weight_channel=16\nskip_quant_node=a,b\n"
            "[mixed_bit_weight_quant_param]\ninit_scale=0.005\nauto_tune=false\n",
        )
    )
    assert cfg.common_quant_param.quant_type == "WEIGHT_QUANT"
    assert cfg.common_quant_param.bit_num == 0
    assert cfg.common_quant_param.skip_quant_node == ["a", "b"]
    assert cfg.common_quant_param.min_quant_weight_channel == 16
    unset = load_config(_write(tmp_path, "[common_quant_param]\nbit_num=0\n"))
    assert unset.common_quant_param.min_quant_weight_channel is None  # the pass decides
    assert cfg.mixed_bit_weight_quant_param.init_scale == pytest.approx(0.005)
    assert cfg.present == {"common_quant_param", "mixed_bit_weight_quant_param"}
    assert cfg.full_quant_param.activation_quant_method == "MAX_MIN"  # default


def test_calibrate_path_and_lists(tmp_path: Path):
    cfg = load_config(
        _write(
            tmp_path,
            "[data_preprocess_param]\ncalibrate_path=input:/data/cal,mask:/data/m\n"
            "calibrate_size=10\nnormalize_mean=[127.5, 127.5, 127.5]\n",
        )
    )
    dp = cfg.data_preprocess_param
    assert dp.paths() == {"input": Path("/data/cal"), "mask": Path("/data/m")}
    assert dp.normalize_mean == [127.5, 127.5, 127.5] and dp.calibrate_size == 10


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[common_quant_parm]\nbit_num=8\n", "unknown section"),
        ("[common_quant_param]\nbitnum=8\n", "no key 'bitnum'"),
        ("[common_quant_param]\nbit_num=eight\n", "expected an integer"),
        ("[common_quant_param]\nbit_num=17\n", "bit_num=17"),
        ("[common_quant_param]\nmin_quant_weight_channel=x\n", "expected an integer"),
        ("[full_quant_param]\nactivation_quant_method=FOO\n", "activation_quant_method"),
        ("not an ini file", "config file"),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path: Path, text: str, needle: str):
    with pytest.raises(UsageError, match=needle):
        load_config(_write(tmp_path, text))


def test_missing_config_file(tmp_path: Path):
    with pytest.raises(UsageError, match="not found"):
        load_config(tmp_path / "nope.cfg")
