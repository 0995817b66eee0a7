"""It learns: the README training command of each model (CAMERA, CAMERA+SelfAlign, VSRN, VSRN+SelfAlign) with a
tiny config on the synthetic world reaches recall far above chance on the test split; the same run on shuffled
training pairs stays near chance."""

from __future__ import annotations

from pathlib import Path

import pytest
from selfalign_testlib import train_argv

from itr_common.metrics import chance_recalls

# tiny config: a larger learning rate and batch 8 so the hardest-negative loss leaves its plateau within ~300 steps
LEARN_FLAGS = ("--num_epochs", "10", "--batch_size", "8", "--learning_rate", "5e-3", "--lr_update", "100",
               "--val_step", "100000")
# A 50-image test gallery (250 captions): random scores give rsum 62 +- 13 (std).
N_TEST = 50
CHANCE_RSUM = chance_recalls(N_TEST)["rsum"]


def _train_and_test(variant: str, selfalign: str, world_dir: Path, run_dir: Path):
    from itr_selfalign.evaluate_models import evaluate
    from itr_selfalign.options import parse_train_args
    from itr_selfalign.train import run

    run(variant, parse_train_args(variant, train_argv(variant, world_dir, run_dir, *LEARN_FLAGS,
                                                      "--selfalign", selfalign)))
    return evaluate(variant, str(run_dir / "model_best.pth.tar"), split="test")


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny world with an N_TEST-image test split, and its twin with shuffled train and dev pairs."""
    from itr_common.synthetic import generate_world, preset, write_honesty_worlds

    world = generate_world(preset("tiny", n_test=N_TEST))
    return write_honesty_worlds(world, tmp_path_factory.mktemp("worlds"), layouts=("precomp",))


@pytest.mark.slow
@pytest.mark.parametrize(("variant", "selfalign"), [("camera", "0"), ("camera", "1"), ("vsrn", "0"), ("vsrn", "1")],
                         ids=["CAMERA", "CAMERA+SelfAlign", "VSRN", "VSRN+SelfAlign"])
def test_learns_real_pairs_not_shuffled_pairs(worlds, tmp_path, variant, selfalign):
    real = _train_and_test(variant, selfalign, worlds["real"], tmp_path / "real")
    shuffled = _train_and_test(variant, selfalign, worlds["shuffled"], tmp_path / "shuffled")
    print(f"real pairs: {real.table()}\nshuffled pairs: {shuffled.table()}")
    assert real.rsum > CHANCE_RSUM + 90, real.table()  # observed 180-245
    assert real.i2t[0] + real.t2i[0] > 12, real.table()  # chance R@1 is 2 both ways
    assert shuffled.rsum < CHANCE_RSUM + 40, shuffled.table()  # observed 45-62
