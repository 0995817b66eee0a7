"""itr_common.rank_state: each rank of a torchrun world resumes its own part, or is told in one line what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from itr_common.dist import DistInfo
from itr_common.errors import UserError
from itr_common.rank_state import load_rank_state, rank_state_path, save_rank_state


def info(rank: int, world: int) -> DistInfo:
    return DistInfo(rank, world, rank, torch.device("cpu"), "gloo" if world > 1 else None)


def test_rank_file_names_keep_the_extension(tmp_path: Path):
    assert rank_state_path(tmp_path / "train_state.pt", 1) == tmp_path / "train_state.rank1.pt"
    assert rank_state_path(tmp_path / "train_state_12.pt", 3) == tmp_path / "train_state_12.rank3.pt"
    assert rank_state_path(tmp_path / "checkpoint.pth.tar", 1) == tmp_path / "checkpoint.rank1.pth.tar"
    assert rank_state_path(tmp_path / "model_best_rsum.pth.tar", 2) == tmp_path / "model_best_rsum.rank2.pth.tar"
    assert rank_state_path(tmp_path / "state", 1) == tmp_path / "state.rank1"


def test_rank_states_resume_each_rank_or_say_what_is_missing(tmp_path: Path):
    path, same = tmp_path / "train_state.pt", ("position",)
    old = {"model": 1, "rng": 0}  # written before per-rank states: still resumes in one process
    assert load_rank_state(old, path, info(0, 1), same) is old
    with pytest.raises(UserError, match="expected per-rank rng states for a resume with 2 processes"):
        load_rank_state(old, path, info(1, 2), same)

    for rank in (0, 1):
        save_rank_state(path, info(rank, 2), {"rng": 10 + rank, "position": [0, 3, 3]}, lambda: {"model": 1})
    state = torch.load(path, weights_only=True)
    assert state == {"model": 1, "rng": 10, "position": [0, 3, 3], "world_size": 2}
    assert torch.load(rank_state_path(path, 1), weights_only=True) == {"rng": 11, "position": [0, 3, 3],
                                                                        "world_size": 2}
    assert load_rank_state(state, path, info(0, 2), same)["rng"] == 10
    assert load_rank_state(state, path, info(1, 2), same)["rng"] == 11
    with pytest.raises(UserError, match="saved by 2"):
        load_rank_state(state, path, info(0, 1), same)
    save_rank_state(path, info(1, 2), {"rng": 11, "position": [0, 6, 6]}, dict)
    with pytest.raises(UserError, match="stopped at different updates"):
        load_rank_state(state, path, info(1, 2), same)
    rank_state_path(path, 1).unlink()
    with pytest.raises(UserError, match=r"train_state\.rank1\.pt: expected rank 1's RNG state"):
        load_rank_state(state, path, info(1, 2), same)


def test_original_checkpoint_has_nothing_per_rank(tmp_path: Path):
    """A checkpoint of an original code base (no RNG saved) resumes with any number of processes; the other
    ranks have nothing of their own to restore."""
    original = {"model": 1, "epoch": 2}
    assert load_rank_state(original, tmp_path / "checkpoint.pth.tar", info(0, 2), ("Eiters",)) is original
    assert load_rank_state(original, tmp_path / "checkpoint.pth.tar", info(1, 2), ("Eiters",)) == {}


def test_rank_zero_keeps_its_writer_and_other_ranks_copy_the_best(tmp_path: Path):
    written = []
    ckpt, best = tmp_path / "checkpoint.pth.tar", tmp_path / "model_best.pth.tar"
    save_rank_state(ckpt, info(0, 2), {"rng": 0}, lambda: {"model": 1},
                    write=lambda obj, target: written.append((dict(obj), target)), copies=[best])
    assert written == [({"model": 1, "rng": 0, "world_size": 2}, ckpt)] and not ckpt.exists()
    assert save_rank_state(ckpt, info(1, 2), {"rng": 1}, dict, copies=[best]) == tmp_path / "checkpoint.rank1.pth.tar"
    assert torch.load(tmp_path / "model_best.rank1.pth.tar", weights_only=True) == {"rng": 1, "world_size": 2}


@pytest.mark.slow
@pytest.mark.dist
def test_a_refusal_on_one_rank_stops_every_rank(tmp_path: Path):
    """Rank 1's file of another update: both processes exit with the one line (rank 0 must not go on training and
    wait for rank 1 in a collective forever)."""
    import subprocess
    import sys

    from itr_common.testing import stderr_report, subprocess_env, torchrun_command

    toy = Path(__file__).resolve().parent / "toy_dist.py"
    run = tmp_path / "run"
    command = [sys.executable, str(toy), "--out", str(run), "--steps", "20", "--save_every", "10", "--pause", "0"]
    done = subprocess.run(torchrun_command(command), env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, stderr_report(done.stderr, 6000)  # every rank's own lines, above torchrun's summary
    state = torch.load(run / "last.rank1.pt", weights_only=True)
    torch.save({**state, "step": 10}, run / "last.rank1.pt")
    resumed = subprocess.run(torchrun_command([*command, "--resume"]), env=subprocess_env(), capture_output=True,
                             text=True, timeout=120)
    assert resumed.returncode != 0
    assert "last.rank1.pt: expected the update of last.pt (step=20), found step=10" in resumed.stderr, resumed.stderr
