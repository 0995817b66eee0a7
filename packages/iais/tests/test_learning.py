"""It learns: on the tiny world, the tiny UNITER pre-trained with UNITER's ITM task (the stand-in for
uniter-base.pt) and fine-tuned with the README's command (hard negatives + IAIS singular, tiny config)
reaches recall far above chance; the same pipeline on shuffled pairs stays near chance."""

from __future__ import annotations

from pathlib import Path

import pytest
from iais_testlib import train_argv

from itr_common.metrics import chance_recalls

# A 50-image test gallery (250 captions): random scores give rsum 62 +- 13 (std), so the bounds below are
# about 3 std or more from chance (on the 20-image tiny gallery the spread is 149 +- 27).
N_TEST = 50
CHANCE_RSUM = chance_recalls(N_TEST)["rsum"]
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
def worlds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny world with an N_TEST-image test split, and its twin with shuffled train and dev pairs."""
    from itr_common.synthetic import generate_world, preset, write_honesty_worlds

    world = generate_world(preset("tiny", n_test=N_TEST))
    return write_honesty_worlds(world, tmp_path_factory.mktemp("worlds"), layouts=("uniter",))


@pytest.mark.slow
def test_learns_real_pairs_not_shuffled_pairs(worlds, tmp_path):
    real = _pretrain_and_finetune(worlds["real"], tmp_path / "real")
    shuffled = _pretrain_and_finetune(worlds["shuffled"], tmp_path / "shuffled")
    print(f"real pairs:\n{real.table()}\nshuffled pairs:\n{shuffled.table()}")
    assert real.rsum > CHANCE_RSUM + 80, real.table()
    assert shuffled.rsum < CHANCE_RSUM + 40, shuffled.table()
