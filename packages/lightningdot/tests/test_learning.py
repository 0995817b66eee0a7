"""It learns: the README's fine-tuning command with the tiny config (from uniter-tiny.pt and the tiny BERT)
reaches recall far above chance on a 50-image test gallery; the same run on shuffled pairs stays near chance."""

from __future__ import annotations

from pathlib import Path

import pytest
from ldot_testlib import train_argv

from itr_common.metrics import chance_recalls

N_TEST = 50
CHANCE_RSUM = chance_recalls(N_TEST)["rsum"]  # 62 +- 13 (std) for random scores


def _finetune(world: Path, out: Path):
    from itr_lightningdot.options import parse_train_args
    from itr_lightningdot.train_itm import run

    return run(parse_train_args(train_argv(world, out))).test_result


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from itr_common.synthetic import generate_world, preset, write_honesty_worlds

    world = generate_world(preset("tiny", n_test=N_TEST))
    return write_honesty_worlds(world, tmp_path_factory.mktemp("worlds"), layouts=("uniter",))


@pytest.mark.slow
def test_learns_real_pairs_not_shuffled_pairs(worlds, tmp_path):
    real = _finetune(worlds["real"], tmp_path / "real")
    shuffled = _finetune(worlds["shuffled"], tmp_path / "shuffled")
    print(f"chance rsum {CHANCE_RSUM:.1f}\nreal pairs:\n{real.table()}\nshuffled pairs:\n{shuffled.table()}")
    assert real.rsum > CHANCE_RSUM + 80, real.table()
    assert shuffled.rsum < CHANCE_RSUM + 40, shuffled.table()
