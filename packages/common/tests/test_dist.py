from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from itr_common import dist
from itr_common.dist import HOROVOD_RANK_VARS, HOROVOD_SIZE_VARS
from itr_common.errors import UserError
from itr_common.testing import LAUNCH_VARS as KIT_LAUNCH_VARS
from itr_common.testing import stderr_report, torchrun_command, torchrun_env

# every variable a launcher (torchrun, horovodrun, mpirun) sets that init_distributed reads
LAUNCH_VARS = (*KIT_LAUNCH_VARS, *HOROVOD_RANK_VARS, *HOROVOD_SIZE_VARS)
WORKER = Path(__file__).with_name("dist_worker.py")


@pytest.fixture
def clean_env(monkeypatch):
    for var in LAUNCH_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_detect_launcher():
    assert dist.detect_launcher({}) is None
    assert dist.detect_launcher({"RANK": "0", "WORLD_SIZE": "2"}) == "torchrun"
    assert dist.detect_launcher({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "4"}) == "horovod"
    assert dist.detect_launcher({"HOROVOD_RANK": "0", "HOROVOD_SIZE": "1"}) is None  # world of one: plain run
    # torchrun wins when both are present (torchrun inside an MPI allocation)
    assert dist.detect_launcher({"RANK": "0", "WORLD_SIZE": "2", "PMI_RANK": "0"}) == "torchrun"


def test_single_process_fallback(clean_env):
    info = dist.init_distributed(device="cpu")
    assert info == dist.DistInfo(0, 1, 0, torch.device("cpu"), None)
    assert info.is_main and not info.distributed
    assert not torch.distributed.is_initialized()
    assert (dist.get_rank(), dist.get_world_size(), dist.get_local_rank(), dist.is_main_process()) == (0, 1, 0, True)

    x = torch.ones(3, 2, requires_grad=True)
    assert dist.all_gather_with_grad(x) is x
    t = torch.tensor([2.0, 3.0])
    assert dist.all_reduce(t, op="mean") is t and t.tolist() == [2.0, 3.0]
    assert dist.broadcast(t) is t
    assert dist.broadcast_object({"a": 1}) == {"a": 1}
    assert dist.all_gather_object("x") == ["x"]
    dist.barrier()
    model = nn.Linear(2, 2)
    assert dist.wrap_model(model) is model and dist.unwrap_model(model) is model
    dist.shutdown()
    with pytest.raises(ValueError, match="op must be one of"):
        dist.all_reduce(t, op="avg")


def test_horovodrun_without_horovod_says_use_torchrun(clean_env):
    clean_env.setenv("OMPI_COMM_WORLD_RANK", "0")
    clean_env.setenv("OMPI_COMM_WORLD_SIZE", "2")
    clean_env.setitem(sys.modules, "horovod.torch", None)  # makes `import horovod.torch` fail
    with pytest.raises(UserError, match=r"torchrun --nproc_per_node N script\.py .*horovodrun -np N python"):
        dist.init_distributed()


def test_torchrun_env_without_master_addr(clean_env):
    clean_env.setenv("RANK", "0")
    clean_env.setenv("WORLD_SIZE", "1")
    with pytest.raises(UserError, match="MASTER_ADDR"):
        dist.init_distributed(device="cpu")
    clean_env.setenv("WORLD_SIZE", "two")
    with pytest.raises(UserError, match="WORLD_SIZE: expected an integer, found 'two'"):
        dist.init_distributed(device="cpu")


def test_process_group_of_one(clean_env):
    """The torch.distributed code paths in this process: gloo, world size 1."""
    for var, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(_free_port())}.items():
        clean_env.setenv(var, value)
    info = dist.init_distributed(device="cpu")
    try:
        assert info == dist.DistInfo(0, 1, 0, torch.device("cpu"), "gloo")
        assert torch.distributed.is_initialized()
        assert dist.init_distributed(device="cpu") == info  # idempotent
        t = torch.tensor([1.0, 4.0])
        assert dist.all_reduce(t, op="mean").tolist() == [1.0, 4.0]
        assert dist.broadcast_object([1, "a"]) == [1, "a"]
        assert dist.all_gather_object(7) == [7]
        model = nn.Linear(2, 1)
        assert dist.wrap_model(model) is model  # world size 1: no DDP
    finally:
        dist.shutdown()
    assert not torch.distributed.is_initialized()


def test_shutdown_after_skips_the_meeting_when_the_body_fails(monkeypatch):
    calls = []
    monkeypatch.setattr(dist, "shutdown", lambda: calls.append("shutdown"))
    with dist.shutdown_after():
        calls.append("body")
    assert calls == ["body", "shutdown"]
    with pytest.raises(UserError), dist.shutdown_after():  # an error of this rank alone: leave at once
        raise UserError("x: expected y")
    assert calls == ["body", "shutdown"]
    with pytest.raises(KeyboardInterrupt), dist.shutdown_after():  # a signal reaches every rank: still meet
        raise KeyboardInterrupt
    assert calls == ["body", "shutdown", "shutdown"]


@pytest.mark.dist
def test_a_rank_failing_alone_reports_and_exits_instead_of_hanging(tmp_path):
    """Rank 1 raises while rank 0 is inside a collective: its error line reaches stderr and the run ends non-zero
    within seconds (with the shutdown in a ``finally`` both ranks hung for good, and the error was never shown)."""
    env = torchrun_env()
    cmd = torchrun_command([sys.executable, WORKER.with_name("failing_rank_worker.py")])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "error: rank 1: expected a readable record, found a broken one" in proc.stderr


@pytest.mark.dist
def test_torchrun_two_gloo_processes(tmp_path):
    env = torchrun_env()
    cmd = torchrun_command([sys.executable, WORKER, tmp_path])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, stderr_report(proc.stderr, 3000)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]

    for r, rec in enumerate(ranks):
        assert rec["info"] == {"rank": r, "world_size": 2, "local_rank": r, "backend": "gloo", "device": "cpu"}
        assert rec["queries"] == [r, 2, r, r == 0]
        assert rec["wrapped"] == "DistributedDataParallel" and rec["unwrapped_is_model"]
        # each rank saw half the batch; DDP's averaged gradients equal one process on the whole batch
        for g_ddp, g_full in zip(rec["grads_ddp"], rec["grads_full_batch"], strict=True):
            torch.testing.assert_close(torch.tensor(g_ddp), torch.tensor(g_full), rtol=1e-5, atol=1e-6)

        # all_gather_with_grad: rank 0 holds 2 rows of 1s, rank 1 three rows of 2s
        assert rec["gathered"] == [[1.0] * 3] * 2 + [[2.0] * 3] * 3
        weights = torch.arange(15.0).reshape(5, 3)
        expected_grad = weights[:2] if r == 0 else weights[2:]  # d(sum(G * W))/d(local) = W at local rows
        assert rec["local_grad"] == expected_grad.tolist()

        assert rec["sum"] == [3.0, 10.0]
        assert rec["mean"] == [1.5]
        assert rec["max"] == [1.0]
        assert rec["broadcast_tensor"] == [6.0, 6.0]  # src=1 holds rank + 5 = 6
        assert rec["broadcast_object"] == {"sender": 0, "payload": [1, "two"]}
        assert rec["all_gather_object"] == ["rank0", "rank1"]


def test_save_on_signal_with_several_processes_only_records_until_the_ranks_agree(clean_env, capsys):
    """world_size > 1: the handler records the signal, nothing is saved until at_boundary() (a collective; here no
    process group, so this rank's flag alone), which saves once and exits 128 + signal; one process: no-op."""
    import signal

    from itr_common.checkpoint import SaveOnSignal

    saves: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    info = dist.DistInfo(0, 2, 0, torch.device("cpu"), "gloo")
    with SaveOnSignal(lambda: saves.append(1) or "state.pt at update 3", info=info) as guard:
        guard.at_boundary()  # no signal yet: goes on
        assert guard.stop_requested() == 0
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGINT)  # a second one changes nothing
        assert saves == [] and guard.received == signal.SIGTERM
        with pytest.raises(SystemExit) as stop:
            guard.at_boundary()
    assert stop.value.code == 143 and saves == [1]
    assert capsys.readouterr().err.endswith("SIGTERM received: saved state.pt at update 3 (rank 0); "
                                            "continue with --resume\n")
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN  # exiting: torchrun's SIGTERM must not kill it
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    single = SaveOnSignal(lambda: saves.append(2), info=dist.DistInfo(0, 1, 0, torch.device("cpu"), None))
    single.received = signal.SIGTERM
    single.at_boundary()  # one process: the handler saves, at_boundary does nothing
    assert saves == [1]
