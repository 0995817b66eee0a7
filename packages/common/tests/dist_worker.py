"""Worker launched by test_dist.py under ``torchrun --nproc_per_node 2``; writes ``<out_dir>/rank<r>.json``.

Each rank computes its half of a global batch through DDP and the full batch in a plain copy of the same
model; it also exercises every collective of ``itr_common.dist`` and records what it saw.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch
from torch import nn

from itr_common import dist
from itr_common.errors import cli_entry

GLOBAL_BATCH = 8


def ddp_step(rank: int, world: int) -> dict:
    torch.manual_seed(0)  # same weights and data on every rank
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 1))
    x, y = torch.randn(GLOBAL_BATCH, 4), torch.randn(GLOBAL_BATCH, 1)

    reference = copy.deepcopy(model)
    nn.functional.mse_loss(reference(x), y).backward()

    ddp = dist.wrap_model(model)
    shard = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
    nn.functional.mse_loss(ddp(x[shard]), y[shard]).backward()
    return {
        "wrapped": type(ddp).__name__,
        "unwrapped_is_model": dist.unwrap_model(ddp) is model,
        "grads_ddp": [p.grad.flatten().tolist() for p in model.parameters()],
        "grads_full_batch": [p.grad.flatten().tolist() for p in reference.parameters()],
    }


def gather_with_grad(rank: int) -> dict:
    local = torch.full((rank + 2, 3), float(rank + 1), requires_grad=True)  # rank 0: 2 rows, rank 1: 3 rows
    gathered = dist.all_gather_with_grad(local)
    weights = torch.arange(gathered.numel(), dtype=torch.float32).reshape(gathered.shape)
    (gathered * weights).sum().backward()
    return {"gathered": gathered.tolist(), "local_grad": local.grad.tolist()}


def collectives(rank: int) -> dict:
    summed = dist.all_reduce(torch.tensor([rank + 1.0, 10.0 * rank]), op="sum")
    mean = dist.all_reduce(torch.tensor([rank + 1.0]), op="mean")
    biggest = dist.all_reduce(torch.tensor([float(rank)]), op="max")
    tensor = dist.broadcast(torch.full((2,), float(rank + 5)), src=1)
    obj = dist.broadcast_object({"sender": rank, "payload": [1, "two"]}, src=0)
    everyone = dist.all_gather_object(f"rank{rank}")
    dist.barrier()
    return {
        "sum": summed.tolist(),
        "mean": mean.tolist(),
        "max": biggest.tolist(),
        "broadcast_tensor": tensor.tolist(),
        "broadcast_object": obj,
        "all_gather_object": everyone,
    }


@cli_entry  # as every training command: a worker ends through itr_common.worker_exit
def main(out_dir: str) -> None:
    info = dist.init_distributed(device="cpu")  # gloo even on a GPU machine (2 ranks may share 1 GPU)
    record = {
        "info": {"rank": info.rank, "world_size": info.world_size, "local_rank": info.local_rank,
                 "backend": info.backend, "device": str(info.device)},
        "queries": [dist.get_rank(), dist.get_world_size(), dist.get_local_rank(), dist.is_main_process()],
        **ddp_step(info.rank, info.world_size),
        **gather_with_grad(info.rank),
        **collectives(info.rank),
    }
    Path(out_dir, f"rank{info.rank}.json").write_text(json.dumps(record))
    dist.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
