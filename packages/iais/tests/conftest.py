"""Fixtures of the IAIS tests: the tiny synthetic world in the UNITER layout, a short trained run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from iais_testlib import QUICK, single_thread, train_argv  # noqa: E402

from itr_common.testing.fixtures import honesty_worlds_factory, one_torch_thread  # noqa: E402, F401


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny world: txt_db/itm_flickr30k_*.db, img_db/flickr30k, pretrained/uniter-tiny.{pt,json}."""
    from itr_common.synthetic import generate_world, preset, write_world

    out = tmp_path_factory.mktemp("world")
    write_world(generate_world(preset("tiny")), out, layouts=("uniter",))
    return out


@pytest.fixture(scope="session")
def trained_run(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Output dir of four IAIS-singular updates on the tiny world (checkpoints at 2 and 4)."""
    from itr_iais.train_itm_hard_negatives import main

    out = tmp_path_factory.mktemp("run") / "out"
    with single_thread():
        assert main(train_argv(world, out, *QUICK, "--IAIS", "singular")) == 0
    return out
