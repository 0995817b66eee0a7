"""Issue 9 on DIME: every bad value refused up front with one line, nothing silent, outputs checked first,
file modes following the umask, SIGTERM never silent (the conformance kit's checks)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from dime_testlib import train_argv, train_command

from itr_common.testing import check_sigterm_message, check_usage_error


@pytest.mark.parametrize(("flags", "needles"), [
    (["--learning_rate", "nan"], ["--learning_rate", "finite number > 0", "nan"]),
    (["--learning_rate", "-1"], ["--learning_rate", "-1.0"]),
    (["--learning_rate", "inf"], ["--learning_rate", "inf"]),
    (["--workers", "-1"], ["--workers", "-1"]),
    (["--grad_clip", "0"], ["--grad_clip", "> 0"]),
    (["--margin", "-0.2"], ["--margin", ">= 0"]),
    (["--drop", "1.5"], ["--drop", "[0, 1)"]),
    (["--batch_size", "2.5"], ["--batch_size", "2.5"]),  # argparse: invalid int value
    (["--device", "cuda:99" if torch.cuda.is_available() else "cuda"], ["--device", "cuda"]),
    (["--device", "tpu"], ["--device", "tpu"]),
])
def test_bad_flag_values_exit_2_before_any_work(world, tmp_path, flags, needles):
    from itr_dime.train import main

    run = tmp_path / "run"
    check_usage_error(main, train_argv(world, run, "f30k_precomp", None, *flags), *needles, untouched=[run])


def test_unwritable_logger_name_is_refused_before_training(world, tmp_path):
    from itr_dime.train import main

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    check_usage_error(main, train_argv(world, blocker / "run"), "--logger_name", "a_file", untouched=[blocker])


def _world_copy(world: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "world"
    shutil.copytree(world, copy, symlinks=True)
    return copy


def test_dev_features_of_another_size_are_refused_at_start(world, tmp_path):
    from itr_dime.train import main

    copy = _world_copy(world, tmp_path)
    dev = copy / "data" / "f30k_precomp" / "dev_ims.npy"
    np.save(dev, np.load(dev)[:, :, :16])
    run = tmp_path / "run"
    line = check_usage_error(main, train_argv(copy, run), "region feature size", "dev", "16", "train", "32",
                             untouched=[run])
    assert "dev_ims.npy" in line


def test_evaluation_split_of_another_size_than_the_checkpoint_is_refused(trained, world, tmp_path):
    from itr_dime.evaluate_models import main

    copy = _world_copy(world, tmp_path)
    test = copy / "data" / "f30k_precomp" / "test_ims.npy"
    np.save(test, np.load(test)[:, :, :16])
    out = tmp_path / "r.json"
    check_usage_error(main, ["--model_path", str(trained["f30k_precomp/i2t"]), "--data_path", str(copy / "data"),
                             "--out", str(out)], "test_ims.npy", "size 32", "found 16", untouched=[out])


def test_bert_path_with_one_more_layer_than_the_checkpoint_is_refused(trained, world, tmp_path):
    """The original ran with a random third layer and exited 0: the missing keys are named instead."""
    from itr_dime.evaluate_models import main

    bert = tmp_path / "bert3"
    shutil.copytree(world / "bert", bert)
    for name in ("bert_config.json", "config.json"):
        config = json.loads((bert / name).read_text())
        config["num_hidden_layers"] += 1
        (bert / name).write_text(json.dumps(config))
    out = tmp_path / "r.json"
    check_usage_error(main, ["--model_path", str(trained["f30k_precomp/i2t"]), "--bert_path", str(bert),
                             "--out", str(out)], "[txt_enc]", "missing", "bert.encoder.layer.2.", untouched=[out])


def test_unwritable_evaluation_output_is_refused_before_scoring(trained, tmp_path):
    from itr_dime.evaluate_models import main

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    check_usage_error(main, ["--model_path", str(trained["f30k_precomp/i2t"]), "--out", str(blocker / "r.json")],
                      "--out", "a_file", untouched=[blocker])
    check_usage_error(main, ["--model_path", str(trained["f30k_precomp/i2t"]), "--out", str(tmp_path)],
                      "--out", "directory")


def test_best_and_last_checkpoints_follow_the_umask(trained):
    from itr_common.testing import check_saved_files

    check_saved_files(trained["f30k_precomp/i2t"].parent, ["checkpoint.pth.tar", "model_best.pth.tar"])


@pytest.mark.slow
def test_sigterm_during_startup_says_so_and_exits_143(world, tmp_path):
    run = tmp_path / "run"
    outcome = check_sigterm_message(train_command(world, run, "--num_epochs", "1"), when=run.exists)
    assert outcome.code == 143
