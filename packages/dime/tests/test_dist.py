"""torchrun --nproc_per_node 2 train.py ...: two gloo processes, each on its half of the data."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from dime_testlib import PACKAGE_DIR, PYTHON, python_env, train_argv

from itr_common.testing import stderr_report


@pytest.mark.dist
def test_torchrun_two_processes(world, tmp_path):
    from itr_dime.checkpoints import read_checkpoint

    torchrun = Path(PYTHON).parent / "torchrun"
    argv = train_argv(world, tmp_path / "run", "f30k_precomp", None, "--num_epochs", "1", "--batch_size", "8",
                      "--device", "cpu")
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(PACKAGE_DIR / "train.py"),
                           *argv], cwd=tmp_path, capture_output=True, text=True, env=python_env(), timeout=300)
    assert proc.returncode == 0, stderr_report(proc.stderr, 3000)
    state = read_checkpoint(tmp_path / "run" / "checkpoint.pth.tar")
    # 240 captions split over 2 processes, 8 per batch: 15 steps each
    assert state["Eiters"] == 15 and state["epoch"] == 1
    assert proc.stderr.count("Text to image:") == 1  # validation runs on rank 0 only
