"""Strict checkpoint loading (issue 9): missing / unexpected keys refused by name, DDP ``module.`` stripped,
documented exceptions logged by name; copies that follow the umask."""

from __future__ import annotations

import logging
import os
import stat

import pytest
import torch
from torch import nn

from itr_common.checkpoint import load_state_dict_mapped, save_atomic, strip_module_prefix
from itr_common.errors import UserError
from itr_common.fileio import _umask, copy_file_atomic


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))


def test_module_prefix_is_stripped():
    source, target = _model(), nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    load_state_dict_mapped(target, state, source="ddp.pt")
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values()))
    assert strip_module_prefix({"module.a": 1, "b": 2}) == {"module.a": 1, "b": 2}  # not every key: left as is


def test_missing_and_unexpected_keys_are_named_and_nothing_is_loaded():
    target = _model()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    state = {k: v + 1 for k, v in _model().state_dict().items() if k != "1.bias"}
    state["2.weight"] = torch.zeros(1)
    with pytest.raises(UserError) as err:
        load_state_dict_mapped(target, state, source="ck.pt")
    assert str(err.value) == "ck.pt: does not match the model: 1 missing (1.bias); 1 unexpected (2.weight)"
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


def test_documented_exceptions_load_and_are_logged_by_name(caplog):
    target = _model()
    state = {k: v for k, v in _model().state_dict().items() if not k.startswith("1.")}
    state["cls.bias"] = torch.zeros(2)
    with caplog.at_level(logging.INFO):
        report = load_state_dict_mapped(target, state, source="pre.pt", allow_missing={r"1\..*": "no head yet"},
                                        ignore_unexpected={r"cls\..*": "pre-training head"})
    assert report.missing == ["1.weight", "1.bias"] and report.unexpected == ["cls.bias"]
    text = caplog.text
    assert "pre.pt: 2 keys missing (left as initialised), no head yet: 1.weight, 1.bias" in text
    assert "pre.pt: 1 keys unexpected (ignored), pre-training head: cls.bias" in text
    with pytest.raises(UserError, match=r"missing \(1.weight"):
        load_state_dict_mapped(target, state, source="pre.pt", ignore_unexpected={r"cls\..*": "head"})


def test_copy_file_atomic_follows_the_umask(tmp_path):
    path = save_atomic({"a": torch.zeros(1)}, tmp_path / "checkpoint.pth.tar")
    copy = copy_file_atomic(path, tmp_path / "model_best.pth.tar")
    modes = {stat.S_IMODE(os.stat(p).st_mode) for p in (path, copy)}
    assert modes == {0o666 & ~_umask()} and copy.read_bytes() == path.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pth.tar", "model_best.pth.tar"]
