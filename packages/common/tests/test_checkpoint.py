from __future__ import annotations

import argparse
import os
import pickle
import random
import signal
import time

import numpy as np
import pytest
import torch
from torch import nn

from itr_common.checkpoint import (
    LoadReport,
    SaveOnSignal,
    capture_rng_state,
    load_checkpoint,
    load_state_dict_mapped,
    load_training_state,
    rename_keys,
    restore_rng_state,
    save_atomic,
    save_training_state,
)
from itr_common.errors import UserError


class _PlantMarker:
    """A malicious object: unpickling it would run a shell command creating a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _scan_style_checkpoint():
    opt = argparse.Namespace(data_name="f30k_precomp", margin=0.2, max_violation=True, lambda_softmax=9.0)
    model = [{"fc.weight": torch.randn(3, 2)}, {"embed.weight": torch.randn(5, 2)}]
    return {"model": model, "epoch": 4, "opt": opt, "best_rsum": np.float64(412.5), "Eiters": 1200}


# ---------------------------------------------------------------------------------------------- save/load
def test_save_atomic_round_trip_with_namespace(tmp_path):
    ckpt = _scan_style_checkpoint()
    path = save_atomic(ckpt, tmp_path / "runs" / "checkpoint.pth.tar")
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["checkpoint.pth.tar"]
    loaded = load_checkpoint(path)
    assert loaded["opt"] == ckpt["opt"] and isinstance(loaded["opt"], argparse.Namespace)
    assert loaded["best_rsum"] == 412.5 and loaded["epoch"] == 4
    torch.testing.assert_close(loaded["model"][0]["fc.weight"], ckpt["model"][0]["fc.weight"])


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "opt": _PlantMarker(marker)}, path)
    with pytest.raises(UserError) as err:
        load_checkpoint(path)
    assert str(err.value) == (
        f"{path}: refusing to unpickle posix.system; checkpoints may only hold tensors, numbers, strings, "
        "containers and argparse.Namespace"
    )
    assert not marker.exists()


def test_legacy_format_checkpoints(tmp_path):
    """PyTorch 0.4-era originals (SCAN, VSRN) wrote the legacy, non-zip format."""
    good = tmp_path / "model_best.pth.tar"
    torch.save(_scan_style_checkpoint(), good, _use_new_zipfile_serialization=False)
    assert load_checkpoint(good)["opt"].margin == 0.2

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil_legacy.pth.tar"
    torch.save({"opt": _PlantMarker(marker)}, evil, _use_new_zipfile_serialization=False)
    with pytest.raises(UserError, match=r"refusing to unpickle posix\.system"):
        load_checkpoint(evil)
    assert not marker.exists()

    # numpy 1.x named the scalar reconstructor numpy.core.multiarray.scalar
    numpy1 = tmp_path / "numpy1.pth.tar"
    torch.save({"best_rsum": np.float64(400.5)}, numpy1, _use_new_zipfile_serialization=False)
    numpy1.write_bytes(numpy1.read_bytes().replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert load_checkpoint(numpy1) == {"best_rsum": 400.5}

    unknown = tmp_path / "unknown_class.pt"
    torch.save({"report": LoadReport()}, unknown, _use_new_zipfile_serialization=False)
    with pytest.raises(UserError, match=r"refusing to unpickle itr_common\.checkpoint\.LoadReport"):
        load_checkpoint(unknown)


def test_raw_pickle_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "vocab.pkl"
    path.write_bytes(pickle.dumps({"word2idx": {"a": 1}}, protocol=2))
    with pytest.raises(UserError, match=r"vocab\.pkl: not a readable PyTorch checkpoint \(.+\)"):
        load_checkpoint(path)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(UserError, match=r"missing\.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00\x01 definitely not a checkpoint")
    with pytest.raises(UserError, match=r"garbage\.pt: not a readable PyTorch checkpoint"):
        load_checkpoint(garbage)
    good = save_atomic({"w": torch.ones(1000)}, tmp_path / "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:500])
    with pytest.raises(UserError, match=r"truncated\.pt: not a readable PyTorch checkpoint"):
        load_checkpoint(truncated)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match=r"empty\.pt: expected a PyTorch checkpoint, found an empty file"):
        load_checkpoint(empty)


def test_crash_mid_write_keeps_old_file(tmp_path, monkeypatch):
    path = save_atomic({"version": 1}, tmp_path / "model.pt")
    old_bytes = path.read_bytes()

    def crashing_save(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(OSError, match="disk full"):
        save_atomic({"version": 2}, path)
    monkeypatch.undo()
    assert path.read_bytes() == old_bytes
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temp file left behind
    assert load_checkpoint(path) == {"version": 1}


# ---------------------------------------------------------------------------------------------- RNG state
def _draws():
    return random.random(), float(np.random.rand()), np.random.randn(), torch.rand(3).tolist()


def test_rng_state_round_trip_through_weights_only_file(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's legacy state
    path = save_atomic(capture_rng_state(), tmp_path / "rng.pt")
    expected = _draws()
    _draws()
    restore_rng_state(load_checkpoint(path))
    assert _draws() == expected


def test_restore_rng_state_rejects_junk():
    with pytest.raises(UserError, match="rng state"):
        restore_rng_state({"python": {}})


# ---------------------------------------------------------------------------------------- training state
def test_training_state_resume(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    path = save_training_state(tmp_path / "state.pt", model, optimizer, scheduler, epoch=3, step=120,
                               extra={"best_rsum": 401.5, "amp": {"scaler": {}}})
    after_save = torch.rand(2)

    torch.manual_seed(99)
    fresh = nn.Linear(3, 2)
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=0.1)
    fresh_sched = torch.optim.lr_scheduler.StepLR(fresh_opt, step_size=1, gamma=0.5)
    point = load_training_state(path, fresh, fresh_opt, fresh_sched)
    assert (point.epoch, point.step, point.extra) == (3, 120, {"best_rsum": 401.5, "amp": {"scaler": {}}})
    torch.testing.assert_close(fresh.weight, model.weight)
    assert fresh_opt.state_dict()["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"]
    assert fresh_sched.get_last_lr() == pytest.approx([0.05])
    assert torch.equal(torch.rand(2), after_save)  # RNG continues where the saved run was


def test_training_state_wrong_file(tmp_path):
    path = save_atomic({"model": {}}, tmp_path / "plain.pt")
    with pytest.raises(UserError, match="expected a training state"):
        load_training_state(path, nn.Linear(1, 1))


# ---------------------------------------------------------------------------------------- mapped loading
class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(2, 3)
        self.norm = nn.LayerNorm(3)


def test_rename_with_regex_pairs_like_google_bert():
    src = {"bert.encoder.weight": torch.ones(3, 2), "bert.encoder.bias": torch.zeros(3),
           "bert.norm.gamma": torch.full((3,), 2.0), "bert.norm.beta": torch.full((3,), 0.5)}
    module = _Tiny()
    report = load_state_dict_mapped(module, src, rename=[(r"^bert\.", ""), (r"\.gamma$", ".weight"),
                                                        (r"\.beta$", ".bias")])
    assert report.ok and sorted(report.loaded) == ["encoder.bias", "encoder.weight", "norm.bias", "norm.weight"]
    assert torch.equal(module.norm.weight, torch.full((3,), 2.0))
    assert torch.equal(module.encoder.weight, torch.ones(3, 2))


def test_rename_callable_can_drop_keys():
    mapping = rename_keys(["a.x", "b.x", "skip.me"], lambda k: None if k.startswith("skip") else k.upper())
    assert mapping == {"a.x": "A.X", "b.x": "B.X"}


def test_strict_mismatch_is_one_readable_line():
    src = {"encoder.weight": torch.ones(2, 2), "encoder.bias": torch.zeros(3), "head.weight": torch.ones(1)}
    module = _Tiny()
    before = module.encoder.bias.detach().clone()
    with pytest.raises(UserError) as err:
        load_state_dict_mapped(module, src, source="uniter-base.pt")
    assert str(err.value) == (
        "uniter-base.pt: does not match the model: 2 missing (norm.weight, norm.bias); "
        "1 unexpected (head.weight); 1 shape mismatches (encoder.weight: model (3, 2) vs checkpoint (2, 2))"
    )
    assert torch.equal(module.encoder.bias, before)  # strict failure loads nothing


def test_non_strict_loads_matching_and_reports():
    src = {"encoder.bias": torch.full((3,), 7.0), "extra": torch.ones(1)}
    module = _Tiny()
    report = load_state_dict_mapped(module, src, strict=False)
    assert report.loaded == ["encoder.bias"] and report.unexpected == ["extra"]
    assert report.missing == ["encoder.weight", "norm.weight", "norm.bias"] and not report.ok
    assert torch.equal(module.encoder.bias, torch.full((3,), 7.0))


def test_summary_truncates_long_lists():
    report = LoadReport(missing=[f"layer.{i}" for i in range(25)])
    assert report.summary() == "25 missing (" + ", ".join(f"layer.{i}" for i in range(10)) + ", ... 15 more)"


def test_rename_collision_is_an_error():
    with pytest.raises(UserError, match="'a.w' and 'b.w' are both renamed to 'w'"):
        load_state_dict_mapped(_Tiny(), {"a.w": torch.ones(1), "b.w": torch.ones(1)}, rename=[(r"^\w\.", "")])


# ------------------------------------------------------------------------------------------------ signals
def test_save_on_sigterm_saves_once_and_exits_143(tmp_path, capsys):
    calls = []

    def save():
        calls.append(1)
        save_atomic({"step": 7}, tmp_path / "interrupted.pt")
        return f"{tmp_path / 'interrupted.pt'} at step 7"

    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exit_info:
        with SaveOnSignal(save) as guard:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # interrupted by the handler long before this ends
    assert exit_info.value.code == 143 and guard.received == signal.SIGTERM
    assert calls == [1]
    assert load_checkpoint(tmp_path / "interrupted.pt") == {"step": 7}
    assert signal.getsignal(signal.SIGTERM) is previous
    # one line in the words every trainer shares (the kit's kill checks look for them)
    assert capsys.readouterr().err == (f"SIGTERM received: saved {tmp_path / 'interrupted.pt'} at step 7; "
                                       "continue with --resume\n")
    hinted = SaveOnSignal(lambda: None, hint="run again with this output_dir to continue")
    assert hinted.announce(signal.SIGINT, None) == (
        "SIGINT received: saved the run; run again with this output_dir to continue")


def test_save_on_signal_restores_handlers_without_signal():
    previous = signal.getsignal(signal.SIGINT)
    with SaveOnSignal(lambda: None) as guard:
        assert signal.getsignal(signal.SIGINT) == guard._handle
    assert signal.getsignal(signal.SIGINT) is previous and guard.received is None
