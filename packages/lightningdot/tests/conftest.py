"""Fixtures of the LightningDOT tests: the tiny synthetic world (UNITER layout) and a short run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ldot_testlib import QUICK, train_argv  # noqa: E402

from itr_common.testing import single_thread  # noqa: E402
from itr_common.testing.fixtures import honesty_worlds_factory, one_torch_thread  # noqa: E402, F401


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from itr_common.synthetic import generate_world, preset, write_world

    out = tmp_path_factory.mktemp("world")
    write_world(generate_world(preset("tiny")), out, layouts=("uniter",))
    return out


@pytest.fixture(scope="session")
def trained_run(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Output dir of two tiny epochs (16 updates)."""
    from itr_lightningdot.train_itm import main

    out = tmp_path_factory.mktemp("run") / "out"
    with single_thread():
        assert main(train_argv(world, out, *QUICK)) == 0
    return out
