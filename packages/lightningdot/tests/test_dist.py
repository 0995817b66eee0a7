"""Data-parallel for real: two gloo processes gather in-batch negatives with gradients; their loss and summed
gradients equal one process holding the global batch. And torchrun on the original script name."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from ldot_testlib import CONFIG_DIR, PACKAGE_DIR, QUICK, dropout_configs, train_argv

LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE",
               "GROUP_RANK", "TORCHELASTIC_RUN_ID")
GLOBAL_BATCH, K = 8, 1  # 8 captions, one hard negative per side each


def _model():
    from itr_lightningdot.model import build_biencoder

    torch.manual_seed(0)
    return build_biencoder(CONFIG_DIR / "img_tiny.json", CONFIG_DIR / "bert_tiny.json", 16, 32).train()


def _items(indices: list[int]) -> dict:
    """Positives of ``indices`` first, then their hard negatives (as the collate orders them)."""
    from itr_lightningdot.data import _text_inputs, image_batch

    def text(i):
        g = torch.Generator().manual_seed(100 + i)
        return torch.cat([torch.tensor([101]), torch.randint(104, 254, (3 + i % 4,), generator=g), torch.tensor([102])])

    def image(i):
        g = torch.Generator().manual_seed(200 + i)
        n = 2 + i % 3
        return torch.randn(n, 32, generator=g), torch.rand(n, 7, generator=g)

    texts = [text(i) for i in indices] + [text(50 + i) for i in indices]
    imgs = [image(i) for i in indices] + [image(50 + i) for i in indices]
    return {"txts": _text_inputs(texts), "imgs": image_batch([f for f, _ in imgs], [p for _, p in imgs])}


def _loss_and_grads(model, batch, bs: int, gather: bool):
    from itr_lightningdot.losses import biencoder_loss

    out = model(batch)
    res = biencoder_loss(out.txt, out.img, None, bs, gather=gather)
    res.loss.backward()
    return float(res.loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from itr_common import dist
    from itr_lightningdot.train_itm import _sum_gradients

    dist.init_distributed(device="cpu")
    model = _model()
    half = GLOBAL_BATCH // 2
    loss, _ = _loss_and_grads(model, _items(list(range(rank * half, (rank + 1) * half))), half, gather=True)
    _sum_gradients(model)
    grads = {n: p.grad.tolist() for n, p in model.named_parameters() if p.grad is not None}
    Path(out, f"rank{rank}.json").write_text(json.dumps({"loss": loss, "grads": grads}))
    dist.shutdown()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.dist
@pytest.mark.slow
def test_gathered_loss_and_gradients_equal_the_global_batch(tmp_path: Path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    loss, grads = _loss_and_grads(_model(), _items(list(range(GLOBAL_BATCH))), GLOBAL_BATCH, gather=False)
    for rank in range(2):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["loss"] == pytest.approx(loss, abs=1e-5)
        assert set(got["grads"]) == set(grads)
        for name, grad in grads.items():
            assert torch.allclose(torch.tensor(got["grads"][name]), grad, atol=1e-5, rtol=1e-4), name


@pytest.mark.dist
@pytest.mark.slow
def test_torchrun_two_processes_train(world: Path, tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    env["OMP_NUM_THREADS"] = "1"
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "train_itm.py",
           *train_argv(world, out, *QUICK, "--train_batch_size", "16")]
    proc = subprocess.run(cmd, cwd=PACKAGE_DIR, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = torch.load(out / "biencoder.last.pt", weights_only=True)
    assert state["scheduler_dict"]["last_epoch"] == 16  # 2 epochs x 240 captions / (2 ranks x 16)
    assert (out / "retrieval_result_test.json").is_file()


def _torchrun(world: Path, out: Path, dropout: list[str], *extra: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "train_itm.py",
            *train_argv(world, out, *QUICK, "--train_batch_size", "16", *dropout), *extra]


def two_rank_kill_and_resume(world: Path, tmp_path: Path) -> tuple[dict, dict, str]:
    """A 2-process run left alone, and the same run SIGTERMed (torchrun forwards it to both ranks) during
    epoch 0's validation (both ranks then save after it), then resumed with 2 processes: both final
    ``biencoder.last.pt`` and the resume log."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    dropout = dropout_configs(tmp_path)
    full, killed = tmp_path / "full", tmp_path / "killed"
    done = subprocess.run(_torchrun(world, full, dropout), cwd=PACKAGE_DIR, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    log = killed / "log.txt"
    proc = subprocess.Popen(_torchrun(world, killed, dropout), cwd=PACKAGE_DIR, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (log.is_file() and "Av Loss per epoch" in log.read_text()):  # epoch 0 trained, validating
            assert proc.poll() is None and time.monotonic() < deadline, "the run to kill ended or hung"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "signal 15" in stderr, stderr[-3000:]
    resumed = subprocess.run(_torchrun(world, killed, dropout, "--resume"), cwd=PACKAGE_DIR, env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return (torch.load(full / "biencoder.last.pt", weights_only=True),
            torch.load(killed / "biencoder.last.pt", weights_only=True), resumed.stderr)


@pytest.mark.dist
@pytest.mark.slow
def test_two_process_kill_and_resume_end_bit_identical(world: Path, tmp_path: Path):
    """Each rank restores its own RNG streams: with dropout, a 2-process run SIGTERMed and resumed ends with the
    weights and optimizer state of the run left alone, bit for bit (restoring rank 0's streams on every rank
    did not: 1.1e-03 max abs weight difference)."""
    from itr_common.testing import assert_same_tensors

    full, resumed, log = two_rank_kill_and_resume(world, tmp_path)
    assert "resumed from" in log and "epoch 1, batch 0" in log
    assert (tmp_path / "killed" / "train_state.rank1.pt").is_file()
    assert_same_tensors(full["model_dict"], resumed["model_dict"], "model_dict")
    assert_same_tensors(full["optimizer_dict"], resumed["optimizer_dict"], "optimizer_dict")


def test_rank_states_resume_each_rank_or_say_what_is_missing(tmp_path: Path):
    from itr_common.dist import DistInfo
    from itr_common.errors import UserError
    from itr_lightningdot.checkpoints import load_rank_state, rank_state_path, save_rank_state

    def info(rank: int, world: int) -> DistInfo:
        return DistInfo(rank, world, rank, torch.device("cpu"), "gloo" if world > 1 else None)

    path, same = tmp_path / "train_state.pt", ("position",)
    old = {"model": 1, "rng": 0}  # written before per-rank states: still resumes in one process
    assert load_rank_state(old, path, info(0, 1), same) is old
    with pytest.raises(UserError, match="expected per-rank RNG states for a resume with 2 processes"):
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
