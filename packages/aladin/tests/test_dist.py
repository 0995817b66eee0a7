"""torchrun --nproc_per_node 2 train.py ...: two gloo processes (DDP), each on its half of the pairs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from aladin_testlib import ALAD_DIR, PYTHON, train_argv

from itr_common.testing import stderr_report, subprocess_env


@pytest.mark.dist
def test_torchrun_two_processes(world, tmp_path):
    from itr_aladin.train import read_aladin_checkpoint

    torchrun = Path(PYTHON).parent / "torchrun"
    argv = train_argv(world, tmp_path / "run", "alad-alignment-and-matching-distill", "--device", "cpu")
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(ALAD_DIR / "train.py"), *argv],
                          cwd=ALAD_DIR, capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert proc.returncode == 0, stderr_report(proc.stderr, 3000)
    state = read_aladin_checkpoint(tmp_path / "run" / "checkpoint.pth.tar")
    # 48 images x 5 captions = 240 pairs over 2 processes, 16 per batch: 8 steps each
    assert state["Eiters"] == 8 and state["epoch"] == 1
    assert proc.stderr.count("matching  minival") == 1  # validation on rank 0 only


@pytest.mark.dist
@pytest.mark.slow
@pytest.mark.parametrize("kill_on_output, resumed_at", [
    (r"validation at epoch 1, batch 0", r"\(epoch 1, batch 0\)"),  # while rank 0 validates, rank 1 waits
    # in the middle of epoch 0, while both ranks step (on a loaded machine the ranks may agree a few batches later)
    (r"Epoch: \[0\]\[1/", r"\(epoch (0, batch [2-8]|1, batch [0-7])\)"),
], ids=["validating", "mid-epoch"])
def test_two_process_kill_and_resume_end_bit_identical(world, tmp_path, kill_on_output, resumed_at):
    """Two gloo processes (dropout 0.1), SIGTERMed while rank 0 validates at the end of epoch 0, or after the second
    batch of epoch 0, resumed with two: each rank restores its own RNG streams and data position
    (``checkpoint.rank1.pth.tar``), so the weights and optimizer end as the run left alone, bit for bit."""
    from itr_common.testing import check_two_process_resume_exact

    def command(run: Path, resume: bool) -> list[str]:
        argv = train_argv(world, run, "alad-alignment-and-matching-distill", "--device", "cpu", "--log_step", "1",
                          epochs=2)
        return [PYTHON, "train.py", *argv, *(["--resume", str(run / "checkpoint.pth.tar")] if resume else [])]

    check_two_process_resume_exact(
        command, tmp_path, final="checkpoint.pth.tar", kill_on_output=kill_on_output,
        rank_files="checkpoint.rank1.pth.tar", resume_evidence=r"loaded checkpoint .* " + resumed_at,
        cwd=ALAD_DIR, select=lambda state: (state["model"], state["optimizer"], state["Eiters"]))
