"""It learns: the README training command of each model (CAMERA, CAMERA+SelfAlign, VSRN, VSRN+SelfAlign) with a
tiny config on the synthetic world reaches recall far above chance on the test split; the same run on shuffled
training pairs stays near chance (``itr_common.testing.check_learns``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from selfalign_testlib import train_argv

from itr_common.testing import check_learns

# tiny config: a larger learning rate and batch 8 so the hardest-negative loss leaves its plateau within ~300 steps
LEARN_FLAGS = ("--num_epochs", "10", "--batch_size", "8", "--learning_rate", "5e-3", "--lr_update", "100",
               "--val_step", "100000")
N_TEST = 50  # a 50-image test gallery (250 captions): random scores give rsum 62 +- 13 (std)


@pytest.mark.slow
@pytest.mark.parametrize(("variant", "selfalign"), [("camera", "0"), ("camera", "1"), ("vsrn", "0"), ("vsrn", "1")],
                         ids=["CAMERA", "CAMERA+SelfAlign", "VSRN", "VSRN+SelfAlign"])
def test_learns_real_pairs_not_shuffled_pairs(honesty_worlds_factory, tmp_path, variant, selfalign):
    from itr_selfalign.evaluate_models import evaluate
    from itr_selfalign.options import parse_train_args
    from itr_selfalign.train import run

    def train_and_evaluate(world_dir: Path, run_dir: Path):
        run(variant, parse_train_args(variant, train_argv(variant, world_dir, run_dir, *LEARN_FLAGS,
                                                          "--selfalign", selfalign)))
        return evaluate(variant, str(run_dir / "model_best.pth.tar"), split="test")

    worlds = honesty_worlds_factory(("precomp",), n_test=N_TEST)
    check = check_learns(train_and_evaluate, worlds, tmp_path, n_images=N_TEST, min_gain=90, max_shuffled_gain=40)
    real = check.real_result
    assert real.i2t[0] + real.t2i[0] > 12, real.table()  # chance R@1 is 2 both ways
