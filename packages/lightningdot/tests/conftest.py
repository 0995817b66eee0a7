"""Fixtures of the LightningDOT tests: the tiny synthetic world (UNITER layout) and a short run."""

from __future__ import annotations

from pathlib import Path

import pytest

from itr_common.testing import fixtures, single_thread
from itr_common.testing.fixtures import honesty_worlds_factory, one_torch_thread  # noqa: F401

fixtures.tests_dir_on_path(__file__)
from ldot_testlib import QUICK, train_argv  # noqa: E402

world = fixtures.world_fixture("uniter")


@pytest.fixture(scope="session")
def trained_run(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Output dir of two tiny epochs (16 updates)."""
    from itr_lightningdot.train_itm import main

    out = tmp_path_factory.mktemp("run") / "out"
    with single_thread():
        assert main(train_argv(world, out, *QUICK)) == 0
    return out
