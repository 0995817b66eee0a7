"""``--legacy_save``: checkpoints in PyTorch's pre-1.6 (non-zip) format for the original's PyTorch 1.0."""

from __future__ import annotations

import zipfile

import pytest
import torch
from dime_testlib import train_argv


@pytest.mark.slow
def test_legacy_save_writes_the_pre_zip_format_we_still_read(world, trained, tmp_path):
    from itr_dime.checkpoints import BEST_FILE, CHECKPOINT_FILE, ORIGINAL_KEYS, load_model, read_checkpoint
    from itr_dime.train import main

    legacy, modern = tmp_path / "legacy", trained["f30k_precomp/i2t"].parent  # the same run without the flag
    main(train_argv(world, legacy, "f30k_precomp", None, "--num_epochs", "1", "--batch_size", "16", "--legacy_save"))
    for name in (CHECKPOINT_FILE, BEST_FILE):
        path = legacy / name
        assert not zipfile.is_zipfile(path) and path.read_bytes()[:2] == b"\x80\x02"  # pickle protocol 2 stream
        assert zipfile.is_zipfile(modern / name)
    state = read_checkpoint(legacy / BEST_FILE)
    assert set(ORIGINAL_KEYS) <= set(state) and state["opt"].legacy_save
    # what the original's torch.load reads: the same dict, the same weights as the zip-format run
    plain = torch.load(legacy / BEST_FILE, weights_only=False)
    assert [sorted(m) for m in plain["model"]] == [sorted(m) for m in read_checkpoint(modern / BEST_FILE)["model"]]
    for ours, theirs in zip(state["model"], read_checkpoint(modern / BEST_FILE)["model"], strict=True):
        for key in ours:
            torch.testing.assert_close(ours[key], theirs[key])
    model, _, _ = load_model(legacy / BEST_FILE)
    assert not model.training


def test_legacy_save_is_a_plain_switch(world, tmp_path):
    from itr_common.errors import UserError
    from itr_dime.options import parse_train_args

    assert parse_train_args(train_argv(world, tmp_path / "r", "f30k_precomp", None, "--legacy_save")).legacy_save
    with pytest.raises((UserError, SystemExit)):
        parse_train_args(train_argv(world, tmp_path / "r", "f30k_precomp", None, "--legacy_save", "yes"))
