"""torchrun --nproc_per_node 2 train.py ...: two gloo processes, each on its half of the data, both variants."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from selfalign_testlib import PYTHON, VARIANT_DIRS, python_env, train_argv


@pytest.mark.dist
@pytest.mark.parametrize("variant", ["camera", "vsrn"])
def test_torchrun_two_processes(world, tmp_path, variant):
    from itr_selfalign.checkpoints import read_checkpoint

    torchrun = Path(PYTHON).parent / "torchrun"
    argv = train_argv(variant, world, tmp_path / "run", "--num_epochs", "1", "--batch_size", "8", "--device", "cpu")
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2",
                           str(VARIANT_DIRS[variant] / "train.py"), *argv], cwd=tmp_path, capture_output=True,
                          text=True, env=python_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = read_checkpoint(tmp_path / "run" / "checkpoint.pth.tar", variant)
    # 240 captions split over 2 processes, 8 per batch: 15 steps each
    assert state["Eiters"] == 15 and state["epoch"] == 1
    assert proc.stderr.count("Text to image:") == 1  # validation runs on rank 0 only
