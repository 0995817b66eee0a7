"""It learns: on the tiny world, the tiny UNITER pre-trained with UNITER's ITM task (the stand-in for
uniter-base.pt) and fine-tuned with the README's command (hard negatives + IAIS singular, tiny config)
reaches recall far above chance; the same pipeline on shuffled pairs stays near chance."""

from __future__ import annotations

from pathlib import Path

import pytest
from iais_testlib import train_argv

# Chance on 20 test images x 100 captions: i2t R@1/5/10 ~ 5/23/42, t2i 5/25/50 -> rsum ~ 150.
CHANCE_RSUM = 150.0
PRETRAIN_STEPS = "1200"
FINETUNE = ("--num_train_steps", "200", "--warmup_steps", "20", "--valid_steps", "1000")  # config: 500


def _pretrain_and_finetune(world: Path, run: Path):
    from itr_iais.options import parse_train_args
    from itr_iais.pretrain_itm import main as pretrain
    from itr_iais.train_itm_hard_negatives import run as train

    ckpt = run / "uniter-tiny-itm.pt"
    assert pretrain(["--txt_db", str(world / "txt_db" / "itm_flickr30k_train.db"),
                     "--img_db", str(world / "img_db" / "flickr30k"),
                     "--model_config", str(world / "pretrained" / "uniter-tiny.json"),
                     "--output", str(ckpt), "--num_train_steps", PRETRAIN_STEPS]) == 0
    return train(parse_train_args(train_argv(world, run / "out", *FINETUNE, "--IAIS", "singular", checkpoint=ckpt)))


@pytest.fixture(scope="module")
def shuffled_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny world with the train and dev captions given to the wrong images (test pairs stay true)."""
    from itr_common.synthetic import generate_world, preset, with_shuffled_training_pairs, write_world

    out = tmp_path_factory.mktemp("shuffled_world")
    write_world(with_shuffled_training_pairs(generate_world(preset("tiny"))), out, layouts=("uniter",))
    return out


@pytest.mark.slow
def test_learns_real_pairs_not_shuffled_pairs(world, shuffled_world, tmp_path):
    real = _pretrain_and_finetune(world, tmp_path / "real")
    shuffled = _pretrain_and_finetune(shuffled_world, tmp_path / "shuffled")
    print(f"real pairs:\n{real.table()}\nshuffled pairs:\n{shuffled.table()}")
    assert real.rsum > CHANCE_RSUM + 80, real.table()
    assert shuffled.rsum < CHANCE_RSUM + 40, shuffled.table()
