"""train.py flags: the original names and defaults, the README's prefix spelling, one-line errors."""

from __future__ import annotations

import pytest

from itr_common.testing import check_usage_error
from itr_dime.options import build_train_parser, default_options, parse_train_args

ORIGINAL_DEFAULTS = {
    "logger_name": "runs/runX", "data_path": "/data", "data_name": "precomp", "bert_path": "./", "max_words": 32,
    "extra_stc": 0, "extra_img": 0, "num_epochs": 30, "batch_size": 32, "learning_rate": 2e-4, "lr_update": 15,
    "grad_clip": 2.0, "drop": 0.0, "margin": 0.2, "max_violation": True, "trade_off": 0.5, "img_dim": 2048,
    "embed_size": 256, "direction": "i2t", "workers": 2, "log_step": 10, "val_step": 2000, "resume": "",
    "finetune": False, "use_restval": False, "measure": "cosine", "use_abs": False, "no_imgnorm": False,
    "reset_train": False, "num_head_IMRC": 16, "hid_IMRC": 512, "raw_feature_norm_CMRC": "clipped_l2norm",
    "lambda_softmax_CMRC": 4.0, "hid_router": 512,
}


def test_every_original_flag_with_its_default():
    opt = vars(default_options())
    for name, value in ORIGINAL_DEFAULTS.items():
        assert opt[name] == value, name
    added = set(opt) - set(ORIGINAL_DEFAULTS)
    assert added == {"seed", "device", "fp16", "shard_size", "legacy_save", "sum_violation_epochs"}
    assert opt["sum_violation_epochs"] == 0  # max violation from the first step, as the original


@pytest.mark.parametrize("spelling", [["--lambda_softmax=4"], ["--lambda_softmax=9"], ["--lambda_softmax", "9"]])
def test_readme_lambda_softmax_prefix(spelling):
    opt = build_train_parser().parse_args(spelling)
    assert opt.lambda_softmax_CMRC == float(spelling[-1].split("=")[-1])


def test_readme_command_parses():
    argv = ["--data_path", "D", "--bert_path", "B", "--data_name", "coco_precomp", "--logger_name", "runs/coco_DIME",
            "--direction", "t2i", "--extra_img", "1", "--lambda_softmax=9"]
    opt = parse_train_args(argv)
    assert (opt.direction, opt.extra_img, opt.lambda_softmax_CMRC) == ("t2i", 1, 9.0)
    assert opt.vocab_file.endswith("vocab.txt") and opt.bert_config_file.endswith("bert_config.json")


def test_unknown_flag_names_the_closest(capsys):
    with pytest.raises(SystemExit) as exc:
        build_train_parser().parse_args(["--lamda_softmax_CMRC", "4"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean '--lambda_softmax_CMRC'" in err[0]


@pytest.mark.parametrize(("argv", "flag"), [
    (["--direction", "x2y"], "--direction"),
    (["--raw_feature_norm_CMRC", "l3norm"], "--raw_feature_norm_CMRC"),
    (["--embed_size", "30", "--num_head_IMRC", "16"], "--num_head_IMRC"),
    (["--batch_size", "0"], "--batch_size"),
    (["--sum_violation_epochs", "-1"], "--sum_violation_epochs"),
])
def test_bad_values_exit_2_with_one_line(argv, flag):
    from itr_dime.train import main

    check_usage_error(main, argv, flag)
