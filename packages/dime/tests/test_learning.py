"""It learns: the README's i2t training command with a tiny config on the synthetic world reaches recall
far above chance on the test split; the same run on shuffled pairs stays near chance."""

from __future__ import annotations

from pathlib import Path

import pytest
from dime_testlib import train_argv

# The tiny config: small sizes, a larger learning rate and batch 8 so the hardest-negative loss leaves its
# initial plateau within a few hundred steps on CPU.
LEARN_FLAGS = ("--num_epochs", "16", "--batch_size", "8", "--learning_rate", "2e-3", "--lr_update", "12")
# Chance on 20 test images x 100 captions: i2t R@1/5/10 ~ 5/23/42, t2i 5/25/50 -> rsum ~ 150.
CHANCE_RSUM = 150.0


def _train_and_test(world_dir: Path, run_dir: Path):
    from itr_dime.evaluate_models import main as evaluate
    from itr_dime.train import main as train

    train(train_argv(world_dir, run_dir, "f30k_precomp", None, *LEARN_FLAGS))
    return evaluate(["--model_path", str(run_dir / "model_best.pth.tar"), "--split", "test",
                     "--out", str(run_dir / "test.json")])


@pytest.fixture(scope="module")
def shuffled_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny world with the train and dev captions given to the wrong images (test pairs stay true)."""
    from itr_common.synthetic import generate_world, preset, with_shuffled_training_pairs, write_world

    out = tmp_path_factory.mktemp("shuffled_world")
    write_world(with_shuffled_training_pairs(generate_world(preset("tiny"))), out, layouts=("precomp",))
    return out


@pytest.mark.slow
def test_learns_real_pairs_not_shuffled_pairs(world, shuffled_world, tmp_path):
    real = _train_and_test(world, tmp_path / "real")
    shuffled = _train_and_test(shuffled_world, tmp_path / "shuffled")
    print(f"real pairs: {real.table()}\nshuffled pairs: {shuffled.table()}")
    assert real.rsum > CHANCE_RSUM + 120, real.table()
    assert real.i2t[0] > 15 and real.t2i[0] > 15
    assert shuffled.rsum < CHANCE_RSUM + 50, shuffled.table()
