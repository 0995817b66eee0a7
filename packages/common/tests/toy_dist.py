"""A tiny data-parallel training command for the kit's 2-process resume check (and a model of what it expects).

    torchrun --standalone --nproc_per_node 2 toy_dist.py --out RUN [--steps N] [--save_every K] [--resume]
        [--rank0_rng] [--step_sleep S]

Each rank trains the same regression net with dropout (DDP, gloo) on random batches of its own RNG stream. Every
``save_every`` steps all ranks pause in a signal-deferred block (a validation's stand-in, printing ``pause at step
N``) and save ``RUN/last.pt`` (rank 0: model, optimizer, its RNG) / ``RUN/last.rankR.pt`` (rank R: its RNG) with
:mod:`itr_common.rank_state`. SIGTERM (to one rank or all) is recorded; at the next step boundary the ranks agree
(``SaveOnSignal.at_boundary``), all save that boundary the same way and exit 143. ``--step_sleep``: each step
sleeps, rank 0 inside its signal-deferred step and the others between steps, so that a signal finds the ranks at
different points (a handler saving on its own would save different steps). ``--rank0_rng``: every rank resumes
rank 0's RNG (not exact: the kit must catch it).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from itr_common import dist
from itr_common.checkpoint import SaveOnSignal, capture_rng_state, load_checkpoint, restore_rng_state, save_atomic
from itr_common.errors import ArgumentParser, cli_entry
from itr_common.rank_state import load_rank_state, save_rank_state
from itr_common.training import signals_deferred


def run(argv: Sequence[str] | None = None) -> None:
    parser = ArgumentParser(prog="toy_dist.py")
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--save_every", type=int, default=10)
    parser.add_argument("--pause", type=float, default=0.5, help="seconds each save pauses, signals deferred")
    parser.add_argument("--step_sleep", type=float, default=0.0,
                        help="seconds each step sleeps: rank 0 inside the step, the others between steps")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--rank0_rng", action="store_true", help="resume rank 0's RNG on every rank (inexact)")
    args = parser.parse_args(argv)
    info = dist.init_distributed(device="cpu")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.3), nn.ReLU(), nn.Linear(8, 1))
    ddp = dist.wrap_model(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    torch.manual_seed(100 + info.rank)  # each rank its own batches and dropout masks
    step = 0
    if args.resume:
        state = load_checkpoint(out / "last.pt")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        own = load_rank_state(state, out / "last.pt", info, same=("step",))
        restore_rng_state(state["rng"] if args.rank0_rng else own["rng"])
        step = int(state["step"])
        print(f"rank {info.rank} resumed at step {step}", file=sys.stderr, flush=True)
    boundary = {"step": step, "rng": capture_rng_state()}

    def save() -> None:
        save_rank_state(out / "last.pt", info, dict(boundary),
                        lambda: {"model": model.state_dict(), "optimizer": optimizer.state_dict()})

    def save_on_signal() -> str:
        save()
        return f"{out / 'last.pt'} at step {boundary['step']}"

    with SaveOnSignal(save_on_signal, info=info) as guard:
        while step < args.steps:
            if info.rank > 0:
                time.sleep(args.step_sleep)
            with signals_deferred():
                if info.rank == 0:
                    time.sleep(args.step_sleep)
                x = torch.randn(16, 4)
                loss = (ddp(x).squeeze(1) - x.sum(1)).pow(2).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                step += 1
                boundary.update(step=step, rng=capture_rng_state())
            if step % args.save_every == 0:
                with signals_deferred():
                    print(f"rank {info.rank} pause at step {step}", file=sys.stderr, flush=True)
                    time.sleep(args.pause)
                    save()
                    dist.barrier()
            guard.at_boundary()
    if info.is_main:
        save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}, out / "final.pt")
    # where a rank stands at the end: a worker that aborted in teardown ("terminate called", DDP's leaked gloo
    # threads against the interpreter's finalisation; itr_common.worker_exit now ends workers without it) showed here
    # whether it got past the group's destruction
    print(f"rank {info.rank} shutting down", file=sys.stderr, flush=True)
    dist.shutdown()
    print(f"rank {info.rank} done: process group destroyed", file=sys.stderr, flush=True)


@cli_entry
def main(argv: Sequence[str] | None = None) -> None:
    run(argv)


if __name__ == "__main__":
    main()
