"""Fixtures of the ALADIN tests: the tiny VinVL world, one short training run, the shared conformance kit."""

from __future__ import annotations

from pathlib import Path

import pytest

from itr_common.testing import single_thread
from itr_common.testing.fixtures import (  # noqa: F401
    honesty_worlds_factory,
    one_torch_thread,
    tests_dir_on_path,
    world_fixture,
)

tests_dir_on_path(__file__)

from aladin_testlib import train_argv  # noqa: E402

world = world_fixture("vinvl", doc="The tiny synthetic world in the VinVL layout: coco_ir/, features/, "
                      "pretrained/checkpoint-0132780/.")


@pytest.fixture(scope="session")
def trained(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model_best_rsum.pth.tar of one epoch of the joint config (both heads)."""
    from itr_aladin.train import train

    run = tmp_path_factory.mktemp("joint")
    with single_thread():
        train(train_argv(world, run, "alad-alignment-and-matching-distill"))
    return run / "model_best_rsum.pth.tar"
