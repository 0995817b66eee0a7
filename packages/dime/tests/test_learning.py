"""It learns: the README's i2t training command with a tiny config on the synthetic world reaches recall
far above chance on the test split; the same run on shuffled pairs stays near chance."""

from __future__ import annotations

from pathlib import Path

import pytest
from dime_testlib import train_argv

from itr_common.metrics import chance_recalls

# The tiny config: small sizes, a larger learning rate and batch 8 so the hardest-negative loss leaves its
# initial plateau within a few hundred steps on CPU.
LEARN_FLAGS = ("--num_epochs", "16", "--batch_size", "8", "--learning_rate", "2e-3", "--lr_update", "12")
# A 50-image test gallery (250 captions): random scores give rsum 62 +- 13 (std), so the bounds below are
# about 3 std or more from chance (on the 20-image tiny gallery the spread is 149 +- 27).
N_TEST = 50
CHANCE_RSUM = chance_recalls(N_TEST)["rsum"]


def _train_and_test(world_dir: Path, run_dir: Path):
    from itr_dime.evaluate_models import main as evaluate
    from itr_dime.train import main as train

    train(train_argv(world_dir, run_dir, "f30k_precomp", None, *LEARN_FLAGS))
    return evaluate(["--model_path", str(run_dir / "model_best.pth.tar"), "--split", "test",
                     "--out", str(run_dir / "test.json")])


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny world with an N_TEST-image test split, and its twin with shuffled train and dev pairs."""
    from itr_common.synthetic import generate_world, preset, write_honesty_worlds

    world = generate_world(preset("tiny", n_test=N_TEST))
    return write_honesty_worlds(world, tmp_path_factory.mktemp("worlds"), layouts=("precomp",))


@pytest.mark.slow
def test_learns_real_pairs_not_shuffled_pairs(worlds, tmp_path):
    real = _train_and_test(worlds["real"], tmp_path / "real")
    shuffled = _train_and_test(worlds["shuffled"], tmp_path / "shuffled")
    print(f"real pairs: {real.table()}\nshuffled pairs: {shuffled.table()}")
    assert real.rsum > CHANCE_RSUM + 120, real.table()
    assert real.i2t[0] > 8 and real.t2i[0] > 8  # chance R@1 is 2 both ways
    assert shuffled.rsum < CHANCE_RSUM + 40, shuffled.table()
