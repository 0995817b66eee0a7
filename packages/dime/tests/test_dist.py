"""torchrun --nproc_per_node 2 train.py ...: two gloo processes, each on its half of the data; killed and resumed."""

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


@pytest.mark.dist
@pytest.mark.slow
def test_two_process_kill_and_resume_end_bit_identical(world, tmp_path):
    """DIME (dropout in its BERT caption encoder) under torchrun, SIGTERMed in the middle of its epoch (after its
    4th step, while the ranks step; SelfAlign's test crosses an epoch of the same ScanTrainer) and resumed with 2
    processes: the ranks agree at a step boundary and both save it, rank 1 its own RNG streams and position
    (``checkpoint.rank1.pth.tar``), so the weights, optimizer and counters end as the run left alone, bit for bit."""
    from itr_common.testing import check_two_process_resume_exact

    flags = ("--num_epochs", "1", "--batch_size", "8", "--val_step", "1000", "--log_step", "1", "--device", "cpu")

    def command(run, resume):
        extra = ["--resume", str(run / "checkpoint.pth.tar")] if resume else []
        return [PYTHON, str(PACKAGE_DIR / "train.py"), *train_argv(world, run, "f30k_precomp", None, *flags, *extra)]

    check_two_process_resume_exact(
        command, tmp_path, final="checkpoint.pth.tar", kill_on_output=r"Epoch: \[0\]\[3/15\]",
        rank_files="checkpoint.rank1.pth.tar", cwd=tmp_path,
        resume_evidence=r"=> loaded checkpoint .*\(epoch 0, batch ([4-9]|1[0-4]),",  # mid-epoch
        select=lambda state: (state["model"], state["optimizer"], state["Eiters"]))
