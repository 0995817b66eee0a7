"""Two gloo processes: gradients averaged as horovod's allreduce, torchrun on the original script name."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from iais_testlib import PACKAGE_DIR, QUICK, train_argv

from itr_common.testing import stderr_report, torchrun_command, torchrun_env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _reduce_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    from itr_common import dist
    from itr_iais.train_itm_hard_negatives import reduce_gradients

    dist.init_distributed(device="cpu")
    layer = torch.nn.Linear(2, 2)
    layer.weight.grad = torch.full((2, 2), float(rank + 1))
    layer.bias.grad = torch.tensor([rank * 4.0, 1.0])
    reduce_gradients(list(layer.parameters()))
    Path(out, f"rank{rank}.json").write_text(json.dumps([layer.weight.grad.tolist(), layer.bias.grad.tolist()]))
    dist.shutdown()


@pytest.mark.dist
def test_gradients_are_averaged_over_processes(tmp_path):
    mp.spawn(_reduce_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        weight, bias = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert weight == [[1.5, 1.5], [1.5, 1.5]] and bias == [2.0, 1.0]


@pytest.mark.dist
def test_torchrun_two_processes_train_and_evaluate(world, tmp_path):
    env = torchrun_env()
    out = tmp_path / "run"
    cmd = torchrun_command([sys.executable, "train_itm_hard_negatives.py",
                            *train_argv(world, out, *QUICK, "--IAIS", "distributed")])
    proc = subprocess.run(cmd, cwd=PACKAGE_DIR, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, stderr_report(proc.stderr, 3000)
    assert (out / "ckpt" / "model_step_4_final.pt").is_file() and (out / "ckpt" / "train_state_4.pt").is_file()
    two_ranks = json.loads((out / "results_test" / "scores.json").read_text())

    from itr_iais.inf_itm import main

    single = tmp_path / "single"
    main(["--txt_db", str(world / "txt_db" / "itm_flickr30k_test.db"), "--img_db", str(world / "img_db" / "flickr30k"),
          "--checkpoint", str(out / "ckpt" / "model_step_4_final.pt"),
          "--model_config", str(world / "pretrained" / "uniter-tiny.json"), "--output_dir", str(single)])
    assert json.loads((single / "scores.json").read_text()) == pytest.approx(two_ranks, abs=1e-9)


@pytest.mark.dist
@pytest.mark.slow
@pytest.mark.parametrize("steps, valid_steps, kill, resumed_at", [
    # while rank 0 validates at update 6 (rank 1 waits in the validation's gathers)
    (12, 6, {"kill_on_output": r"validation at update 6"}, "6"),
    # between validations, while both ranks step: the progress bar of rank 0 (printed every 0.1 s, a few updates
    # apart) anywhere in updates 10-59 of 200; the ranks agree at the next update boundary, before the validation
    # at 100
    (200, 100, {"kill_on_output": r"\| [1-5]\d/200 \["}, "([1-9]|[1-9][0-9])"),
    # after the last update (12, no validation saved it): its train state is saved before the final validation,
    # during which the signal lands; the ranks agree after it and save again; the resumed run only evaluates
    (12, 100, {"kill_when": "ckpt/train_state_12.rank1.pt"}, "12"),
], ids=["validating", "between-validations", "final-validation"])
def test_two_process_kill_and_resume_end_bit_identical(world, tmp_path, steps, valid_steps, kill, resumed_at):
    """Two gloo processes (dropout 0.1), SIGTERMed during a validation, between two, or during the final one,
    resumed with two: each rank restores its own RNG streams and group-stream positions (``train_state_N.rank1.pt``),
    so the final weights are those of the run left alone, bit for bit."""
    from itr_common.testing import check_two_process_resume_exact

    flags = ("--num_train_steps", str(steps), "--valid_steps", str(valid_steps), "--train_batch_size", "2",
             "--warmup_steps", "2")

    def command(run: Path, resume: bool) -> list[str]:
        return [sys.executable, "train_itm_hard_negatives.py", *train_argv(world, run, *flags),
                *(["--resume"] if resume else [])]

    check = check_two_process_resume_exact(
        command, tmp_path, final=f"ckpt/model_step_{steps}_final.pt", **kill,
        rank_files="ckpt/train_state_*.rank1.pt", resume_evidence=rf"resumed from .* at update {resumed_at}\n",
        cwd=PACKAGE_DIR)
    if "kill_when" in kill:  # the ranks stopped together after the final validation, before the test evaluation
        assert "eval test" not in (tmp_path / "killed.log").read_text(errors="replace")

    # without rank 1's file the resume is refused on both ranks in one line (it restarted rank 1's RNG and data before)
    from itr_common.testing import run_command, subprocess_env

    (check.resumed.parent / f"train_state_{steps}.rank1.pt").unlink()
    again = run_command(torchrun_command(command(tmp_path / "killed", True)), cwd=PACKAGE_DIR,
                        env=subprocess_env(CUDA_VISIBLE_DEVICES=""), timeout=300)
    assert again.code != 0 and f"train_state_{steps}.rank1.pt: expected rank 1's RNG state" in again.stderr, \
        again.tail()
