"""Fixtures of the SelfAlign tests: the tiny synthetic world, short trained checkpoints of each variant."""

from __future__ import annotations

from pathlib import Path

import pytest

from itr_common.testing import fixtures
from itr_common.testing.fixtures import honesty_worlds_factory, one_torch_thread  # noqa: F401

fixtures.tests_dir_on_path(__file__)
from selfalign_testlib import PACKAGE_DIR, single_thread, train_argv  # noqa: E402

world = fixtures.world_fixture(
    "precomp", doc="The tiny synthetic world: data/{f30k,coco}_precomp (with boxes and sizes), vocab/*.pkl, bert/.")
in_package_dir = fixtures.package_dir_fixture(PACKAGE_DIR)


@pytest.fixture(scope="session")
def trained(world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """model_best.pth.tar of one short epoch of CAMERA+SelfAlign and VSRN+SelfAlign on COCO-like data, and of the
    plain VSRN baseline."""
    from itr_selfalign.options import parse_train_args
    from itr_selfalign.train import run

    runs = {}
    with single_thread():
        for variant, selfalign in (("camera", "1"), ("vsrn", "1"), ("vsrn", "0")):
            out = tmp_path_factory.mktemp(f"{variant}{selfalign}")
            argv = train_argv(variant, world, out, "--num_epochs", "1", "--batch_size", "16", "--selfalign", selfalign,
                              data_name="coco_precomp")
            run(variant, parse_train_args(variant, argv))
            runs[f"{variant}{selfalign}"] = out / "model_best.pth.tar"
    return runs
