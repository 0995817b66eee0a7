"""Fixtures of the DIME tests: the synthetic world, tiny trained checkpoints, the package folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from itr_common.testing import fixtures
from itr_common.testing.fixtures import honesty_worlds_factory, one_torch_thread  # noqa: F401

fixtures.tests_dir_on_path(__file__)
from dime_testlib import PACKAGE_DIR, README_I2T, README_T2I, single_thread, train_argv  # noqa: E402

world = fixtures.world_fixture("precomp", doc="The tiny synthetic world in the precomp layout (+ bert/): "
                               "data/{f30k,coco}_precomp, bert/.")
in_package_dir = fixtures.package_dir_fixture(PACKAGE_DIR)


@pytest.fixture(scope="session")
def trained(world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Checkpoints of one short epoch of each direction on Flickr30K-like and COCO-like data."""
    from itr_dime.train import train

    runs = {}
    with single_thread():
        for data_name in ("f30k_precomp", "coco_precomp"):
            for direction, readme in (("i2t", README_I2T), ("t2i", README_T2I)):
                out = tmp_path_factory.mktemp(f"{data_name}_{direction}")
                train(train_argv(world, out, data_name, readme, "--num_epochs", "1", "--batch_size", "16"))
                runs[f"{data_name}/{direction}"] = out / "model_best.pth.tar"
    return runs
