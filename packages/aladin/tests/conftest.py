"""Fixtures of the ALADIN tests: the tiny VinVL world, one short training run, the shared conformance kit."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from aladin_testlib import train_argv  # noqa: E402

from itr_common.testing import single_thread  # noqa: E402
from itr_common.testing.fixtures import honesty_worlds_factory, one_torch_thread  # noqa: E402, F401


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny synthetic world in the VinVL layout: coco_ir/, features/, pretrained/checkpoint-0132780/."""
    from itr_common.synthetic import generate_world, preset, write_world

    out = tmp_path_factory.mktemp("world")
    write_world(generate_world(preset("tiny")), out, layouts=("vinvl",))
    return out


@pytest.fixture(scope="session")
def trained(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model_best_rsum.pth.tar of one epoch of the joint config (both heads)."""
    from itr_aladin.train import train

    run = tmp_path_factory.mktemp("joint")
    with single_thread():
        train(train_argv(world, run, "alad-alignment-and-matching-distill"))
    return run / "model_best_rsum.pth.tar"
