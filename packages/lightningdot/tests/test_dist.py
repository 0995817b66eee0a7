"""Data-parallel for real: two gloo processes gather in-batch negatives with gradients; their loss and summed
gradients equal one process holding the global batch. And torchrun on the original script name."""

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
from ldot_testlib import CONFIG_DIR, PACKAGE_DIR, QUICK, dropout_configs, pretrain_argv, train_argv

from itr_common.testing import stderr_report, torchrun_command, torchrun_env

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
    env = torchrun_env()
    out = tmp_path / "run"
    cmd = torchrun_command([sys.executable, "train_itm.py",
                            *train_argv(world, out, *QUICK, "--train_batch_size", "16")])
    proc = subprocess.run(cmd, cwd=PACKAGE_DIR, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, stderr_report(proc.stderr, 3000)
    state = torch.load(out / "biencoder.last.pt", weights_only=True)
    assert state["scheduler_dict"]["last_epoch"] == 16  # 2 epochs x 240 captions / (2 ranks x 16)
    assert (out / "retrieval_result_test.json").is_file()


@pytest.mark.dist
@pytest.mark.slow
def test_two_process_kill_and_resume_end_bit_identical(world: Path, tmp_path: Path):
    """Each rank restores its own RNG streams: with dropout, a 2-process run SIGTERMed in the middle of epoch 1
    (after its 4th batch, while the ranks step; torchrun forwards it to both, they agree at an update boundary and
    both save it) and resumed with 2 processes ends with the weights and optimizer state of the run left alone, bit
    for bit (restoring rank 0's streams on every rank did not: 1.1e-03 max abs weight difference)."""
    from itr_common.testing import check_two_process_resume_exact

    dropout = dropout_configs(tmp_path)

    def command(run: Path, resume: bool) -> list[str]:
        return [sys.executable, "train_itm.py", *train_argv(world, run, *QUICK, "--train_batch_size", "16", *dropout),
                *(["--resume"] * resume)]

    check_two_process_resume_exact(
        command, tmp_path, final="biencoder.last.pt", kill_on_output=r"Epoch: 1: Step: 3/",
        rank_files="train_state.rank1.pt", resume_evidence=r"resumed from .*epoch 1, batch [4-8],", cwd=PACKAGE_DIR,
        select=lambda state: (state["model_dict"], state["optimizer_dict"]))


@pytest.mark.dist
@pytest.mark.slow
def test_two_process_pretrain_kill_and_resume_end_bit_identical(world: Path, tmp_path: Path):
    """pretrain.py under torchrun: a run SIGTERMed after its step-8 save (both ranks agree on an update boundary and
    save it, rank 1 its own streams) and run again on the same output_dir ends with the weights of the run left
    alone, bit for bit, with dropout on. Both ranks create the output folders at once, which once failed one rank
    (a shared probe file) and hung the other in the shutdown barrier."""
    from itr_common.testing import check_two_process_resume_exact

    def command(run: Path, resume: bool) -> list[str]:  # pretrain.py continues a used output_dir by itself
        return [sys.executable, "pretrain.py", *pretrain_argv(world, run, "--num_train_steps", "40", "--valid_steps",
                                                              "8", "--warmup_steps", "2", "--dropout", "0.1")]

    check_two_process_resume_exact(
        command, tmp_path, final="ckpt/model_step_40.pt", kill_when="ckpt/train_state_8.rank1.pt",
        rank_files="ckpt/train_state_*.rank1.pt", resume_evidence=r"resumed from \S+ at step \d+", cwd=PACKAGE_DIR)
