"""Distributed training through one small API: torchrun (DDP), horovod when launched by it, or one process.

The originals launch with ``horovodrun -np N python train.py ...``. Horovod 0.28.1 does not build against
PyTorch 2.x, so the engine here is ``torch.distributed`` started by ``torchrun``::

    torchrun --nproc_per_node N train.py ...          # instead of: horovodrun -np N python train.py ...

:func:`init_distributed` reads the launcher's environment:

* ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` / ``MASTER_ADDR`` / ``MASTER_PORT`` (torchrun): a process
  group with the ``nccl`` backend on GPU, ``gloo`` on CPU; models are wrapped in DDP.
* ``OMPI_COMM_WORLD_RANK`` / ``HOROVOD_RANK`` / ``PMI_RANK`` ... (horovodrun / mpirun): horovod.torch is
  used through the same functions when it imports; otherwise a :class:`UserError` says to use torchrun.
* nothing: one process; every collective is the identity and nothing is initialised.

There is no module state: every helper asks ``torch.distributed`` (or horovod) what is initialised.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch
import torch.distributed as tdist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from itr_common.errors import UserError

TORCHRUN_VARS = ("RANK", "WORLD_SIZE")
HOROVOD_RANK_VARS = ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")
HOROVOD_SIZE_VARS = ("HOROVOD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")
REDUCE_OPS = ("sum", "mean", "max", "min", "product")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank among ``world_size`` processes and the device it computes on.

    ``backend`` is ``"gloo"``, ``"nccl"``, ``"horovod"`` or ``None`` (single process).
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


# ----------------------------------------------------------------------------------------- launchers
def detect_launcher(environ: Mapping[str, str] | None = None) -> str | None:
    """``"torchrun"``, ``"horovod"`` or ``None`` from the environment variables the launchers set.

    A horovodrun/mpirun world of size 1 counts as no launcher (a plain single process).
    """
    env = os.environ if environ is None else environ
    if all(var in env for var in TORCHRUN_VARS):
        return "torchrun"
    if any(var in env for var in HOROVOD_RANK_VARS):
        size = next((env[var] for var in HOROVOD_SIZE_VARS if var in env), None)
        return None if size == "1" else "horovod"
    return None


def _horovod() -> ModuleType | None:
    """The imported and initialised ``horovod.torch`` module, or None."""
    hvd = sys.modules.get("horovod.torch")
    if hvd is not None and hvd.is_initialized():
        return hvd
    return None


def _torch_initialized() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def _env_int(name: str, default: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        if default is None:
            raise UserError(f"environment variable {name}: expected an integer set by torchrun, found nothing")
        return default
    try:
        return int(raw)
    except ValueError:
        raise UserError(f"environment variable {name}: expected an integer, found '{raw}'") from None


def _default_device(local_rank: int, device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


# ------------------------------------------------------------------------------------ init / shutdown
def init_distributed(
    backend: str | None = None, device: str | torch.device | None = None, timeout_s: float = 1800.0
) -> DistInfo:
    """Initialise from the launcher's environment and return this process's :class:`DistInfo`.

    ``backend`` defaults to ``nccl`` for a CUDA device and ``gloo`` otherwise; ``device`` defaults to
    ``cuda:LOCAL_RANK`` when CUDA is available, else CPU. Calling it again is harmless.
    """
    launcher = detect_launcher()
    if launcher == "horovod":
        return _init_horovod(device)
    if launcher is None:
        return DistInfo(0, 1, 0, _default_device(0, device), None)

    rank, world_size = _env_int("RANK"), _env_int("WORLD_SIZE")
    local_rank = _env_int("LOCAL_RANK", 0)
    dev = _default_device(local_rank, device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not _torch_initialized():
        for var in ("MASTER_ADDR", "MASTER_PORT"):
            if var not in os.environ:
                raise UserError(
                    f"environment variable {var}: expected it set by torchrun (RANK is set), found nothing; "
                    "launch with `torchrun --nproc_per_node N script.py ...`"
                )
        chosen = backend or ("nccl" if dev.type == "cuda" else "gloo")
        tdist.init_process_group(
            backend=chosen,
            init_method="env://",
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    return DistInfo(tdist.get_rank(), tdist.get_world_size(), local_rank, dev, tdist.get_backend())


def _init_horovod(device: str | torch.device | None) -> DistInfo:
    try:
        import horovod.torch as hvd  # optional: only under horovodrun
    except ImportError:
        raise UserError(
            "launched by horovodrun/mpirun but horovod.torch cannot be imported (Horovod 0.28.1 does not build "
            "against PyTorch 2.x): launch with `torchrun --nproc_per_node N script.py ...` instead of "
            "`horovodrun -np N python script.py ...`"
        ) from None
    hvd.init()
    dev = _default_device(hvd.local_rank(), device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return DistInfo(hvd.rank(), hvd.size(), hvd.local_rank(), dev, "horovod")


def shutdown() -> None:
    """Tear down the process group (or horovod); a no-op in a single process.

    Every rank meets first (:func:`quiesce`): a rank that destroys its gloo group while a peer is still
    talking to it makes the peer abort ("terminate called without an active exception").
    """
    if _torch_initialized():
        quiesce("shutdown")
        tdist.destroy_process_group()
    hvd = _horovod()
    if hvd is not None:
        hvd.shutdown()


@contextlib.contextmanager
def shutdown_after() -> Iterator[None]:
    """Run the body, then :func:`shutdown`; an ``Exception`` in the body skips the shutdown.

    A rank that fails alone (a bad record, a full disk) must not wait for its peers: they may be inside a
    collective it will never join, so the meeting would hang every rank and the error would never be printed.
    It leaves at once, its error is reported, and torchrun stops the other ranks when it exits. A signal
    (``KeyboardInterrupt``, ``Terminated``, ``SystemExit``) reaches every rank alike and still meets them.
    """
    try:
        yield
    except Exception:
        raise
    except BaseException:
        shutdown()
        raise
    shutdown()


# --------------------------------------------------------------------------------------------- queries
def get_rank() -> int:
    """Global rank of this process (0 in a single process)."""
    if _torch_initialized():
        return tdist.get_rank()
    hvd = _horovod()
    return hvd.rank() if hvd is not None else 0


def get_world_size() -> int:
    """Number of processes (1 in a single process)."""
    if _torch_initialized():
        return tdist.get_world_size()
    hvd = _horovod()
    return hvd.size() if hvd is not None else 1


def get_local_rank() -> int:
    """Rank of this process on its machine (torchrun's ``LOCAL_RANK``; 0 in a single process)."""
    if _torch_initialized():
        return int(os.environ.get("LOCAL_RANK", 0))
    hvd = _horovod()
    return hvd.local_rank() if hvd is not None else 0


def is_main_process() -> bool:
    """True on rank 0 (the process that logs and saves)."""
    return get_rank() == 0


# ------------------------------------------------------------------------------------------ collectives
_quiesce_count = itertools.count()


def quiesce(tag: str = "quiesce", timeout_s: float = 300.0) -> None:
    """Return once every rank has reached this call and every collective before it is complete on every rank, so
    that a rank may close its connections (destroy the group, exit) without a peer still reading from it.

    A gloo barrier alone is not enough: the rank that leaves it first may close its sockets while the last message
    of the barrier is still on its way to a peer, which then aborts (SIGABRT; pytorch/gloo#155). After the barrier
    every rank also checks in on the launcher's key-value store, which is not a gloo connection, and waits for all
    others there: a rank that checked in has received every message it will ever wait for. No-op in one process.
    """
    barrier()
    if not _torch_initialized() or tdist.get_world_size() == 1:
        return
    from torch.distributed import distributed_c10d

    store = distributed_c10d._get_default_store()
    round_ = f"itr_common/{tag}/{next(_quiesce_count)}"
    store.set(f"{round_}/{tdist.get_rank()}", "1")
    store.wait([f"{round_}/{r}" for r in range(tdist.get_world_size())], datetime.timedelta(seconds=timeout_s))


def barrier() -> None:
    """Wait for every process."""
    if _torch_initialized():
        if tdist.get_backend() == "nccl":
            tdist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            tdist.barrier()
        return
    hvd = _horovod()
    if hvd is not None:
        if hasattr(hvd, "barrier"):
            hvd.barrier()
        else:
            hvd.allreduce(torch.zeros(1), name="itr_common.barrier")


def broadcast(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite ``tensor`` (any shape) in place with rank ``src``'s copy and return it."""
    if _torch_initialized():
        tdist.broadcast(tensor, src=src)
        return tensor
    hvd = _horovod()
    if hvd is not None:
        hvd.broadcast_(tensor, root_rank=src)
    return tensor


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` (any picklable object) on every rank."""
    if _torch_initialized():
        holder = [obj]
        tdist.broadcast_object_list(holder, src=src)
        return holder[0]
    hvd = _horovod()
    return hvd.broadcast_object(obj, root_rank=src) if hvd is not None else obj


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduce ``tensor`` in place over all ranks with ``op`` (sum, mean, max, min, product); return it.

    ``mean`` is a sum divided by the world size (gloo has no AVG).
    """
    if op not in REDUCE_OPS:
        raise ValueError(f"all_reduce: op must be one of {REDUCE_OPS}, got {op!r}")
    if _torch_initialized():
        torch_op = {
            "sum": tdist.ReduceOp.SUM,
            "mean": tdist.ReduceOp.SUM,
            "max": tdist.ReduceOp.MAX,
            "min": tdist.ReduceOp.MIN,
            "product": tdist.ReduceOp.PRODUCT,
        }[op]
        tdist.all_reduce(tensor, op=torch_op)
        if op == "mean":
            tensor.div_(tdist.get_world_size())
        return tensor
    hvd = _horovod()
    if hvd is not None:
        hvd_op = {"sum": hvd.Sum, "mean": hvd.Average, "max": hvd.Max, "min": hvd.Min, "product": hvd.Product}[op]
        hvd.allreduce_(tensor, op=hvd_op)
    return tensor


def _gather_shapes(tensor: torch.Tensor) -> list[torch.Size]:
    shape = torch.tensor(tensor.shape, dtype=torch.long, device=tensor.device)
    hvd = None if _torch_initialized() else _horovod()
    if hvd is not None:
        rows = hvd.allgather(shape.unsqueeze(0))
    else:
        buffers = [torch.empty_like(shape) for _ in range(tdist.get_world_size())]
        tdist.all_gather(buffers, shape)
        rows = torch.stack(buffers)
    shapes = [torch.Size(row.tolist()) for row in rows]
    if any(s[1:] != tensor.shape[1:] for s in shapes):
        raise ValueError(f"all_gather_with_grad: trailing dimensions differ between ranks: {shapes}")
    return shapes


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``tensor`` along dim 0, keeping autograd to the local shard.

    tensor: (n_r, *rest) on rank r (n_r may differ between ranks) -> (sum_r n_r, *rest) in rank order.
    The local slice of the result *is* ``tensor`` (not a copy), so gradients flow back to this rank's
    inputs; the other ranks' slices are constants. In a single process ``tensor`` itself is returned.
    """
    world = get_world_size()
    if world == 1:
        return tensor
    sizes = [s[0] for s in _gather_shapes(tensor)]
    hvd = None if _torch_initialized() else _horovod()
    if hvd is not None:
        pieces = list(hvd.allgather(tensor.detach()).split(sizes, dim=0))
    else:
        longest = max(sizes)
        padded = tensor.detach()
        if padded.shape[0] < longest:
            filler = padded.new_zeros((longest - padded.shape[0], *padded.shape[1:]))
            padded = torch.cat([padded, filler], dim=0)
        buffers = [torch.empty_like(padded) for _ in range(world)]
        tdist.all_gather(buffers, padded.contiguous())
        pieces = [buf[:n] for buf, n in zip(buffers, sizes)]
    pieces[get_rank()] = tensor
    return torch.cat(pieces, dim=0)


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), as a list in rank order."""
    if _torch_initialized():
        out: list[Any] = [None] * tdist.get_world_size()
        tdist.all_gather_object(out, obj)
        return out
    hvd = _horovod()
    return list(hvd.allgather_object(obj)) if hvd is not None else [obj]


# ------------------------------------------------------------------------------------------------ models
def wrap_model(model: nn.Module, find_unused_parameters: bool = False, **ddp_kwargs: Any) -> nn.Module:
    """``DistributedDataParallel(model)`` when more than one process runs, else ``model`` unchanged.

    Move the model to its device first. Under horovod the model is returned after broadcasting rank 0's
    parameters and hooking an allreduce (average) onto every parameter's accumulated gradient, which is
    what ``hvd.DistributedOptimizer`` would do, so the training loop is the same for every engine.
    """
    if get_world_size() == 1:
        return model
    if _torch_initialized():
        first = next(model.parameters(), None)
        device_ids = [first.device.index] if first is not None and first.is_cuda else None
        return DistributedDataParallel(
            model, device_ids=device_ids, find_unused_parameters=find_unused_parameters, **ddp_kwargs
        )
    hvd = _horovod()
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    for param in model.parameters():
        if param.requires_grad:
            param.register_post_accumulate_grad_hook(lambda p: hvd.allreduce_(p.grad, op=hvd.Average))
    return model


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (for saving state dicts with the original key names)."""
    return model.module if isinstance(model, DistributedDataParallel) else model
