"""It learns: the README's fine-tuning command with the tiny config (from uniter-tiny.pt and the tiny BERT)
reaches recall far above chance on a 50-image test gallery; the same run on shuffled pairs stays near chance
(``itr_common.testing.check_learns``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ldot_testlib import train_argv

from itr_common.testing import check_learns


def _finetune(world: Path, run: Path):
    from itr_lightningdot.options import parse_train_args
    from itr_lightningdot.train_itm import run as train

    return train(parse_train_args(train_argv(world, run))).test_result


@pytest.mark.slow
def test_learns_real_pairs_not_shuffled_pairs(honesty_worlds_factory, tmp_path):
    worlds = honesty_worlds_factory(("uniter",), n_test=50)
    check = check_learns(_finetune, worlds, tmp_path, n_images=50)
    print(f"real pairs:\n{check.real_result.table()}\nshuffled pairs:\n{check.shuffled_result.table()}")
