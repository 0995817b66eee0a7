"""pretrain.py: the four tasks on hand-checked cases, mix_ratio, the released checkpoint layout, resume."""

from __future__ import annotations

import json
import os
import random
import signal
from pathlib import Path

import pytest
import torch
from ldot_testlib import CONFIG_DIR, pretrain_argv

from itr_common.checkpoint import load_checkpoint
from itr_lightningdot.pretrain import fuse, img_mask, random_word, token_buckets


def test_masking_follows_bert_and_always_masks_something():
    rng = random.Random(0)
    tokens, labels = random_word([5, 6, 7], (104, 254), 103, rng)
    assert len(tokens) == len(labels) == 3 and any(label != -1 for label in labels)
    many, labels = random_word(list(range(200, 254)) * 40, (104, 254), 103, random.Random(1))
    masked = sum(label != -1 for label in labels) / len(labels)
    assert 0.12 < masked < 0.18
    chosen = [t for t, label in zip(many, labels) if label != -1]
    assert 0.75 < sum(t == 103 for t in chosen) / len(chosen) < 0.85
    assert img_mask(0.0001, 4, random.Random(0)).sum() == 1  # at least one region


def test_cls_concat_fusion():
    seq, cls = torch.ones(2, 3, 4), torch.arange(8.0).view(2, 4)
    assert torch.equal(fuse(seq, cls, "add")[1, 2], cls[1] + 1)
    assert torch.equal(fuse(seq, cls, "multiply")[0, 1], cls[0])
    assert torch.equal(fuse(seq, cls, ""), seq)


def test_token_buckets_respect_the_token_budget():
    lens = [random.Random(i).randint(5, 40) for i in range(300)]
    batches = token_buckets(lens, 200, random.Random(0), bucket_size=64)
    assert sorted(i for b in batches for i in b) == list(range(300))
    assert all(max(lens[i] for i in b) * len(b) <= 200 or len(b) == 1 for b in batches)


def test_pretrain_writes_the_released_layout_and_resumes_exactly(world: Path, tmp_path: Path, monkeypatch, capsys):
    import itr_lightningdot.pretrain as pre
    from itr_lightningdot.checkpoints import load_biencoder_checkpoint
    from itr_lightningdot.model import build_biencoder

    quick = ("--num_train_steps", "12", "--valid_steps", "4", "--warmup_steps", "2")
    full = tmp_path / "full"
    assert pre.main(pretrain_argv(world, full, *quick)) == 0
    state = load_checkpoint(full / "ckpt" / "model_step_12.pt")
    heads = {k.split(".", 1)[0] for k in state}
    assert heads == {"bert", "cls", "feat_regress", "region_classifier", "itm_output"}
    assert torch.equal(state["cls.predictions.decoder.weight"],
                       state["bert.img_model.bert.embeddings.word_embeddings.weight"])  # tied
    assert torch.equal(state["feat_regress.weight"], state["bert.img_model.bert.img_embeddings.img_linear.weight"])
    assert state["region_classifier.net.3.weight"].shape == (1601, 64)
    model = build_biencoder(CONFIG_DIR / "img_tiny.json", CONFIG_DIR / "bert_tiny.json", 64, 32)
    assert load_biencoder_checkpoint(model, full / "ckpt" / "model_step_12.pt").startswith("pre-training")

    killed = tmp_path / "killed"
    real_lr = pre.lr_at

    def dying(step, args):
        if step == 11:  # killed during update 11; the last state saved is update 8
            raise KeyboardInterrupt
        return real_lr(step, args)

    monkeypatch.setattr(pre, "lr_at", dying)
    with pytest.raises(KeyboardInterrupt):
        pre.run(pre.parse_args(pretrain_argv(world, killed, *quick)))
    monkeypatch.setattr(pre, "lr_at", real_lr)
    assert pre.latest_state(killed / "ckpt")[0] == 8
    assert pre.main(pretrain_argv(world, killed, *quick)) == 0  # a used output_dir continues (the original's way)
    resumed = load_checkpoint(killed / "ckpt" / "model_step_12.pt")
    for key, value in state.items():
        assert torch.equal(value, resumed[key]), key

    signalled = tmp_path / "signalled"

    def sigterm(step, args):
        if step == 11:  # SIGTERM during update 11: held until it ends, then update 11 is saved
            os.kill(os.getpid(), signal.SIGTERM)
        return real_lr(step, args)

    monkeypatch.setattr(pre, "lr_at", sigterm)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        pre.run(pre.parse_args(pretrain_argv(world, signalled, *quick)))
    monkeypatch.setattr(pre, "lr_at", real_lr)
    assert stop.value.code == 143 and pre.latest_state(signalled / "ckpt")[0] == 11
    assert (f"SIGTERM received: saved {signalled / 'ckpt' / 'train_state_11.pt'} at step 11; run again with this "
            "output_dir to continue") in capsys.readouterr().err
    assert pre.main(pretrain_argv(world, signalled, *quick)) == 0
    resumed = load_checkpoint(signalled / "ckpt" / "model_step_12.pt")
    for key, value in state.items():
        assert torch.equal(value, resumed[key]), key


def test_bad_pretrain_config_exits_2(world: Path, tmp_path: Path, capsys):
    from itr_lightningdot.pretrain import main

    bad = [{"name": "x", "db": [str(world / "txt_db" / "itm_flickr30k_train.db")],
            "img": [str(world / "img_db" / "flickr30k")], "tasks": ["itm", "mrm-nce"], "mix_ratio": [1, 1]}]
    with pytest.raises(SystemExit) as info:
        main(pretrain_argv(world, tmp_path / "o", "--train_datasets", json.dumps(bad)))
    assert info.value.code == 2 and "mrm-nce" in capsys.readouterr().err
    out = tmp_path / "ot"
    with pytest.raises(SystemExit) as info:
        main(pretrain_argv(world, out, "--itm_ot_lambda", "0.1"))
    assert info.value.code == 2 and "itm_ot_lambda" in capsys.readouterr().err and not out.exists()
