"""A tiny training command for the conformance kit's own tests (and a model of what the kit expects).

    python toy_cli.py --out RUN [--steps N] [--save_every K] [--resume] [--lr X] [--startup_sleep S]

Trains a 2-layer regression net with dropout on random batches drawn from the global torch RNG,
checkpointing ``RUN/last.pt`` every ``save_every`` steps and on SIGINT/SIGTERM (steps protected
by ``signals_deferred``), ``RUN/final.pt`` at the end. Bad input exits 2 before ``RUN`` exists.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from itr_common.checkpoint import SaveOnSignal, load_training_state, save_training_state
from itr_common.errors import ArgumentParser, cli_entry, fail
from itr_common.training import signals_deferred


def build(lr: float) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.ReLU(), nn.Linear(8, 1))
    return model, torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)


def run(argv: Sequence[str] | None = None) -> dict:
    parser = ArgumentParser(prog="toy_cli.py")
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--save_every", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--startup_sleep", type=float, default=0.0)
    parser.add_argument("--step_sleep", type=float, default=0.0)
    parser.add_argument("--started", default=None, help="file touched when start-up begins (after imports)")
    parser.add_argument("--forget_rng", action="store_true", help="resume without the RNG state (inexact)")
    parser.add_argument("--silent_save", action="store_true",
                        help="save on SIGTERM with a handler of its own that says nothing (what the kit refuses)")
    args = parser.parse_args(argv)
    if not (math.isfinite(args.lr) and args.lr > 0):
        fail(f"--lr: expected a finite number > 0, found {args.lr}")
    if args.started:
        Path(args.started).touch()
    time.sleep(args.startup_sleep)
    out = Path(args.out)
    model, optimizer = build(args.lr)
    step = 0
    if args.resume:
        step = load_training_state(out / "last.pt", model, optimizer, restore_rng=not args.forget_rng).step
        print(f"resumed at step {step}", file=sys.stderr, flush=True)

    def save() -> str:
        save_training_state(out / "last.pt", model, optimizer, step=step)
        return f"{out / 'last.pt'} at step {step}"

    guard = SaveOnSignal(save)
    if args.silent_save:
        guard = contextlib.nullcontext()
        signal.signal(signal.SIGTERM, lambda signum, frame: (save(), sys.exit(128 + signum)))
    with guard:
        while step < args.steps:
            with signals_deferred():
                x = torch.randn(16, 4)
                loss = (model(x).squeeze(1) - x.sum(1)).pow(2).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                step += 1
                if step % args.save_every == 0:
                    save()
            time.sleep(args.step_sleep)
    save_training_state(out / "final.pt", model, optimizer, step=step)
    return {"loss": float(loss.detach()), "steps": step}


@cli_entry
def main(argv: Sequence[str] | None = None) -> dict:
    return run(argv)  # a result object on purpose: cli_entry must still exit 0


if __name__ == "__main__":
    sys.exit(main())
