"""Fixtures of the IAIS tests: the tiny synthetic world in the UNITER layout, a short trained run."""

from __future__ import annotations

from pathlib import Path

import pytest

from itr_common.testing import fixtures
from itr_common.testing.fixtures import honesty_worlds_factory, one_torch_thread  # noqa: F401

fixtures.tests_dir_on_path(__file__)
from iais_testlib import QUICK, single_thread, train_argv  # noqa: E402

world = fixtures.world_fixture("uniter", doc="The tiny world: txt_db/itm_flickr30k_*.db, img_db/flickr30k, "
                               "pretrained/uniter-tiny.{pt,json}.")


@pytest.fixture(scope="session")
def trained_run(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Output dir of four IAIS-singular updates on the tiny world (checkpoints at 2 and 4)."""
    from itr_iais.train_itm_hard_negatives import main

    out = tmp_path_factory.mktemp("run") / "out"
    with single_thread():
        assert main(train_argv(world, out, *QUICK, "--IAIS", "singular")) == 0
    return out
