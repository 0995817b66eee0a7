"""The original flags and defaults, restore_training_settings from training_args.bin (read safely)."""

from __future__ import annotations

import argparse
import shutil

import pytest
import torch

from itr_aladin.options import OVERRIDE_PARAMS, build_test_parser, build_train_parser, restore_training_settings
from itr_common.errors import UserError


class Payload:  # a class a pickle would have to import: refused by the weights-only unpickler
    pass


def test_original_defaults():
    args = build_train_parser().parse_args([])
    assert (args.data_dir, args.img_feat_file, args.max_seq_length, args.max_img_seq_length) == (
        "datasets/coco_ir", "datasets/coco_ir/features.tsv", 70, 50)
    found = (args.num_epochs, args.log_step, args.val_step, args.logger_name, args.seed)
    assert found == (20, 10, 500, "runs/runX", 88)
    assert (args.resume, args.load_teacher_model, args.reinitialize_scheduler) == ("", "", False)
    assert (args.att_mask_type, args.img_feature_dim, args.num_workers, args.add_od_labels) == ("CLR", 2054, 4, False)
    test = build_test_parser().parse_args([])
    assert test.load_checkpoint == "" and test.per_gpu_eval_batch_size == 64


def test_restore_training_settings(world):
    args = build_train_parser().parse_args(["--eval_model_dir", str(world / "pretrained" / "checkpoint-0132780"),
                                            "--max_seq_length", "50"])
    notes: list[str] = []
    restore_training_settings(args, notes)
    assert args.add_od_labels is True and args.do_lower_case is True  # from training_args.bin
    assert args.max_seq_length == 50  # lengths are not restored (ALADIN's list)
    assert "max_seq_length" not in OVERRIDE_PARAMS and any("add_od_labels" in n for n in notes)


def test_training_args_bin_is_read_without_running_code(world, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(world / "pretrained" / "checkpoint-0132780", ckpt)
    torch.save(argparse.Namespace(add_od_labels=True, payload=Payload()), ckpt / "training_args.bin")
    args = build_train_parser().parse_args(["--eval_model_dir", str(ckpt)])
    with pytest.raises(UserError, match="refusing to unpickle .*Payload"):
        restore_training_settings(args)


@pytest.mark.parametrize(("flags", "needle"), [
    (["--device", "bogus"], "--device: expected cpu, cuda or cuda:N"),
    (["--seed", "-1"], "--seed: expected an int >= 0"),
])
def test_device_and_seed_are_checked_before_any_work(flags, needle):
    from itr_aladin.options import parse_test_args, parse_train_args

    with pytest.raises(UserError, match=needle):
        parse_train_args(["--config", "c.yaml", "--eval_model_dir", "d", *flags])
    with pytest.raises(UserError, match=needle):
        parse_test_args(["--load_checkpoint", "c.pth.tar", "--eval_model_dir", "d", *flags])
