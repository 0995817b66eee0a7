"""Checkpoints: the original key names (tiny and full size), the original file layout, old BERT names,
and --resume continuing a run killed by SIGTERM exactly where it stopped."""

from __future__ import annotations

import argparse

import pytest
import torch
from dime_testlib import tiny_bert, tiny_opt, train_command

from itr_common.checkpoint import load_checkpoint, save_atomic
from itr_common.testing import check_checkpoint_round_trip, check_resume_exact
from itr_dime.checkpoints import ORIGINAL_KEYS, load_model, read_checkpoint
from itr_dime.model import DIME

ROUTER = ["router.mlp.0.weight", "router.mlp.0.bias", "router.mlp.2.weight", "router.mlp.2.bias"]
RIC = ROUTER
IMRC = ROUTER + [f"sa.att_layer.linears.{i}.{p}" for i in range(3) for p in ("weight", "bias")] + [
    f"sa.feed_forward_layer.{fc}.{p}" for fc in ("fc1", "fc2") for p in ("weight", "bias")]
GLGC = ROUTER + [f"{fc}.{p}" for fc in ("fc_1", "fc_2") for p in ("weight", "bias")]
CMRC = [f"refine.{fc}.{p}" for fc in ("fc_scale", "fc_shift", "fc_1", "fc_2") for p in ("weight", "bias")] + ROUTER
BN = ["bn.weight", "bn.bias", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked"]


def original_itr_keys() -> list[str]:
    """models/InteractionModule.py: layer 0 registers ric, imrc, glgc, cmrc; layers 1-2 ric, glgc, imrc, cmrc."""
    def layer(name, order):
        cells = {"ric": RIC, "imrc": IMRC, "glgc": GLGC, "cmrc": CMRC}
        return [f"{name}.{cell}.{key}" for cell in order for key in cells[cell]]

    return (layer("dynamic_itr_l0", ["ric", "imrc", "glgc", "cmrc"])
            + layer("dynamic_itr_l1", ["ric", "glgc", "imrc", "cmrc"])
            + layer("dynamic_itr_l2", ["ric", "glgc", "imrc", "cmrc"])
            + ["path_mapping.weight", "path_mapping.bias"] + BN)


def original_bert_keys(n_layers: int) -> list[str]:
    """models/BERT.py (LgQu/DIME 5a711c4: LayerNorm weight/bias), inside EncoderText as ``bert``."""
    keys = [f"embeddings.{e}.weight" for e in ("word_embeddings", "position_embeddings", "token_type_embeddings")]
    keys += ["embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias"]
    for i in range(n_layers):
        p = f"encoder.layer.{i}."
        keys += [f"{p}attention.self.{m}.{w}" for m in ("query", "key", "value") for w in ("weight", "bias")]
        keys += [f"{p}{m}.{w}" for m in ("attention.output.dense", "attention.output.LayerNorm", "intermediate.dense",
                                          "output.dense", "output.LayerNorm") for w in ("weight", "bias")]
    keys += ["pooler.dense.weight", "pooler.dense.bias"]
    return ["bert." + k for k in keys]


def original_txt_keys(n_layers: int) -> list[str]:
    return original_bert_keys(n_layers) + ["fc.weight", "fc.bias"] + [
        f"convs1.{k}.{p}" for k in range(3) for p in ("weight", "bias")] + ["mapping.weight", "mapping.bias"]


ORIGINAL_IMG_KEYS = ["fc.weight", "fc.bias"] + BN


@pytest.mark.parametrize("direction", ["i2t", "t2i"])
def test_original_key_names_at_tiny_size(direction):
    keys = [list(sd) for sd in DIME(tiny_opt(direction), tiny_bert()).original_state_dict()]
    assert keys == [ORIGINAL_IMG_KEYS, original_txt_keys(1), original_itr_keys()]


def test_original_key_names_and_shapes_at_full_size():
    from transformers import BertConfig, BertModel

    from itr_dime.options import default_options

    with torch.device("meta"):
        model = DIME(default_options(), BertModel(BertConfig()))  # BERT-base: 768 hidden, 12 layers
    img, txt, itr = (dict((k, tuple(v.shape)) for k, v in sd.items()) for sd in model.original_state_dict())
    assert list(img) == ORIGINAL_IMG_KEYS and list(txt) == original_txt_keys(12) and list(itr) == original_itr_keys()
    assert img["fc.weight"] == (256, 2048) and img["bn.weight"] == (256,)
    assert txt["bert.embeddings.word_embeddings.weight"] == (30522, 768)
    assert [txt[f"convs1.{k}.weight"] for k in range(3)] == [(256, 1, 1, 768), (256, 1, 2, 768), (256, 1, 3, 768)]
    assert txt["fc.weight"] == (256, 768) and txt["mapping.weight"] == (256, 768)
    assert itr["path_mapping.weight"] == (128, 36) and itr["bn.running_var"] == (256,)
    assert itr["dynamic_itr_l0.imrc.sa.att_layer.linears.0.weight"] == (256, 256)
    assert itr["dynamic_itr_l1.imrc.sa.feed_forward_layer.fc1.weight"] == (512, 256)
    assert itr["dynamic_itr_l0.ric.router.mlp.0.weight"] == (512, 256)
    assert itr["dynamic_itr_l1.cmrc.router.mlp.2.weight"] == (4, 512)
    assert itr["dynamic_itr_l2.glgc.router.mlp.2.weight"] == (1, 512)


def test_trainer_checkpoint_has_the_original_layout(trained):
    path = trained["f30k_precomp/i2t"]
    state = load_checkpoint(path)  # weights_only, argparse.Namespace allowed
    assert set(ORIGINAL_KEYS) <= set(state)
    assert isinstance(state["opt"], argparse.Namespace) and state["opt"].direction == "i2t"
    assert state["epoch"] == 1 and state["Eiters"] == 15
    keys = [list(sd) for sd in state["model"]]
    assert keys == [ORIGINAL_IMG_KEYS, original_txt_keys(2), original_itr_keys()]  # the world's BERT: 2 layers
    assert (path.parent / "checkpoint.pth.tar").is_file()


def test_checkpoint_with_gamma_beta_bert_names_loads(trained, tmp_path):
    path = trained["f30k_precomp/t2i"]
    state = read_checkpoint(path)
    renamed = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
               for k, v in state["model"][1].items()}
    assert any(k.endswith("LayerNorm.gamma") for k in renamed)
    state["model"][1] = renamed
    old = tmp_path / "old.pth.tar"
    torch.save(state, old)
    new_model, _, _ = load_model(path)
    old_model, _, _ = load_model(old)
    for (k, a), b in zip(new_model.state_dict().items(), old_model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=k)


def test_interaction_mismatch_is_one_clear_error(trained, tmp_path):
    from itr_common.errors import UserError

    state = read_checkpoint(trained["f30k_precomp/i2t"])
    del state["model"][2]["path_mapping.weight"]
    bad = tmp_path / "bad.pth.tar"
    torch.save(state, bad)
    with pytest.raises(UserError, match=r"itr_module.*path_mapping.weight"):
        load_model(bad)


@pytest.mark.slow
def test_kill_and_resume_ends_with_the_same_weights(world, tmp_path):
    """``python train.py`` killed by SIGTERM after its first checkpoint, then ``--resume``d: the same final
    weights and optimizer state, bit for bit, as the uninterrupted run (CPU)."""
    flags = ("--num_epochs", "2", "--batch_size", "16", "--learning_rate", "1e-3", "--val_step", "4")

    def command(run, resume):
        return train_command(world, run, *flags, *(["--resume", str(run / "checkpoint.pth.tar")] if resume else []))

    check = check_resume_exact(command, tmp_path, final="checkpoint.pth.tar", kill_when="checkpoint.pth.tar",
                               resume_evidence=r"=> loaded checkpoint .*\(epoch \d+, batch \d+",
                               select=lambda state: (state["model"], state["optimizer"], state["Eiters"]))
    assert read_checkpoint(check.resumed)["Eiters"] == 30


def test_checkpoint_round_trip_and_strict_keys(trained, tmp_path):
    """save -> load_model gives the same tensors; a missing or an unexpected key is refused by name; a DDP
    ``module.`` prefix loads."""
    model, _, state = load_model(trained["f30k_precomp/i2t"])

    def save(module, path):
        save_atomic({**state, "model": module.original_state_dict()}, path)

    check_checkpoint_round_trip(model, save, lambda path: load_model(path)[0], tmp_path)
