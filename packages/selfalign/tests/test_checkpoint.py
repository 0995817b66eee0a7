"""Checkpoints: the original layout and key names both ways, old BERT names, strict loading, the other variant
refused, the VSRN caption decoder saved, and --resume after a kill ending bit-identical to an uninterrupted run."""

from __future__ import annotations

import argparse

import pytest
import torch
from selfalign_testlib import PYTHON, VARIANT_DIRS, train_argv

from itr_common.checkpoint import load_checkpoint, save_atomic
from itr_common.errors import UserError
from itr_common.testing import check_checkpoint_round_trip, check_resume_exact, check_saved_files
from itr_selfalign.checkpoints import ORIGINAL_KEYS, original_state_dict, read_checkpoint
from itr_selfalign.models import load_model


@pytest.mark.parametrize("name", ["camera1", "vsrn1", "vsrn0"])
def test_trainer_checkpoint_has_the_original_layout(trained, name):
    state = load_checkpoint(trained[name])  # weights_only, argparse.Namespace allowed
    assert set(ORIGINAL_KEYS) <= set(state) and isinstance(state["opt"], argparse.Namespace)
    assert state["epoch"] == 1 and len(state["model"]) == (3 if name.endswith("1") else 2)
    assert ("best_r1" in state) == name.startswith("camera")  # the VSRN script saves no best_r1
    if name.startswith("vsrn"):
        assert state["caption_model"]["decoder.out.weight"].shape[0] == state["model"][1]["embed.weight"].shape[0]
    if name.endswith("1"):  # renormalised at every forward, then moved by the step: near unit rows
        protos = state["model"][2]["v_prototypes.weight"]
        assert protos.shape == (16, 32) and torch.allclose(protos.norm(dim=1), torch.ones(16), atol=0.05)


def test_best_and_last_checkpoints_follow_the_umask(trained):
    """model_best.pth.tar was copied through mkstemp, so it was 0600 where checkpoint.pth.tar followed the umask."""
    for name in ("camera1", "vsrn1"):
        check_saved_files(trained[name].parent, ["checkpoint.pth.tar", "model_best.pth.tar"])


@pytest.mark.parametrize("name", ["camera1", "vsrn1"])
def test_original_only_checkpoint_loads_and_round_trips(trained, tmp_path, name):
    variant = name[:-1]
    model, _, state, _ = load_model(trained[name], variant)
    original = {k: state[k] for k in (*ORIGINAL_KEYS, "best_r1") if k in state}  # what the original saves
    path = tmp_path / "original.pth.tar"
    torch.save(original, path)
    again, _, _, _ = load_model(path, variant)
    for module, other in zip(model.original_modules(), again.original_modules(), strict=True):
        for (key, a), b in zip(module.state_dict().items(), other.state_dict().values(), strict=True):
            torch.testing.assert_close(a, b, msg=key)


def test_gamma_beta_bert_names_load(trained, tmp_path):
    state = read_checkpoint(trained["camera1"])
    state["model"][1] = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
                         for k, v in state["model"][1].items()}
    assert any(k.endswith("LayerNorm.gamma") for k in state["model"][1])
    old = tmp_path / "old.pth.tar"
    torch.save(state, old)
    new_model = load_model(trained["camera1"], "camera")[0]
    old_model = load_model(old, "camera")[0]
    for (k, a), b in zip(new_model.state_dict().items(), old_model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=k)


def test_missing_and_unexpected_keys_are_named(trained, tmp_path):
    state = read_checkpoint(trained["vsrn1"])
    del state["model"][0]["Rs_GCN_2.theta.weight"]
    bad = tmp_path / "missing.pth.tar"
    torch.save(state, bad)
    with pytest.raises(UserError, match=r"img_enc.*1 missing \(Rs_GCN_2.theta.weight\)"):
        load_model(bad, "vsrn")
    state = read_checkpoint(trained["camera1"])
    state["model"][2]["extra.weight"] = torch.zeros(1)
    torch.save(state, bad)
    with pytest.raises(UserError, match=r"region_loss.*unexpected \(extra.weight\)"):
        load_model(bad, "camera")


def test_the_other_variant_is_refused(trained):
    with pytest.raises(UserError, match="expected a CAMERA checkpoint, found VSRN's"):
        load_model(trained["vsrn1"], "camera")
    with pytest.raises(UserError, match="expected a VSRN checkpoint, found CAMERA's"):
        load_model(trained["camera1"], "vsrn")


@pytest.mark.parametrize("name", ["camera1", "vsrn1"])
def test_checkpoint_round_trip_and_strict_keys(trained, tmp_path, name):
    """save -> load_model gives the same tensors; a missing or an unexpected key is refused by name; a DDP
    ``module.`` prefix loads."""
    variant = name[:-1]
    model, _, state, _ = load_model(trained[name], variant)

    def save(module, path):
        save_atomic({**state, "model": original_state_dict(module)}, path)

    check_checkpoint_round_trip(model, save, lambda path: load_model(path, variant)[0], tmp_path, which="model[0]")


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["camera", "vsrn"])
def test_kill_and_resume_ends_with_the_same_weights(world, tmp_path, variant):
    """``train.py`` killed by SIGTERM after its first checkpoint, then ``--resume``d: the same weights, optimizer
    state, caption decoder and counters, bit for bit, as the uninterrupted run (CPU). Two epochs, so the
    CAMERA+SelfAlign prototype freeze of epoch 0 is crossed."""
    flags = ("--num_epochs", "2", "--batch_size", "16", "--learning_rate", "1e-3", "--val_step", "5")

    def command(run, resume):
        extra = ["--resume", str(run / "checkpoint.pth.tar")] if resume else []
        return [PYTHON, "train.py", *train_argv(variant, world, run, *flags, *extra)]

    check = check_resume_exact(
        command, tmp_path, final="checkpoint.pth.tar", kill_when="checkpoint.pth.tar",
        resume_evidence=r"=> loaded checkpoint .*\(epoch \d+, batch \d+", cwd=VARIANT_DIRS[variant],
        select=lambda state: (state["model"], state.get("caption_model"), state["optimizer"], state["Eiters"]))
    assert load_checkpoint(check.resumed)["Eiters"] == 30  # 15 batches of 16 per epoch
