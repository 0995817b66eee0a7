"""It learns: on the tiny world, the tiny UNITER pre-trained with UNITER's ITM task (the stand-in for
uniter-base.pt) and fine-tuned with the README's command (hard negatives + IAIS singular, tiny config)
reaches recall far above chance; the same pipeline on shuffled pairs stays near chance."""

from __future__ import annotations

from pathlib import Path

import pytest
from iais_testlib import train_argv

from itr_common.testing import check_learns

# A 50-image test gallery (250 captions): random scores give rsum 62 +- 13 (std), so the bounds below are
# about 3 std or more from chance (on the 20-image tiny gallery the spread is 149 +- 27).
N_TEST = 50
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


@pytest.mark.slow
def test_learns_real_pairs_not_shuffled_pairs(honesty_worlds_factory, tmp_path):
    worlds = honesty_worlds_factory(("uniter",), n_test=N_TEST)
    check_learns(_pretrain_and_finetune, worlds, tmp_path, n_images=N_TEST, min_gain=80, max_shuffled_gain=40)
