"""Per-rank resume states: each process of a torchrun world saves and restores its own RNG streams.

With N processes every rank draws its own dropout masks (and may hold its own data position), so an exact
``--resume`` needs each rank's part, not rank 0's copied to all. The layout keeps a single-process file as it
was: rank 0 writes the train state or checkpoint at ``path`` (its usual layout, plus ``world_size``), every other
rank R writes only its own part (RNG streams, position, ...) plus ``world_size`` beside it, at
:func:`rank_state_path` (``train_state.pt`` -> ``train_state.rank1.pt``, ``checkpoint.pth.tar`` ->
``checkpoint.rank1.pth.tar``). Saving needs no collective, so a rank can save from a signal handler; loading is
one (every rank calls it), so that a refusal found on one rank stops every rank with the same line.

Loading (:func:`load_rank_state`) checks, one :class:`~itr_common.errors.UserError` line each: the same number of
processes as the save, each rank's file present, and saved at the same update as rank 0's (the ``same`` keys).
A state written before per-rank states existed (no ``world_size``) resumes in one process only when it holds a
per-rank entry (``rng``); an original checkpoint with none of them resumes as before with any number.

Used by LightningDOT (``train_itm.py``, ``pretrain.py``), IAIS (``train_itm_hard_negatives.py``), ALADIN
(``train.py``) and :class:`itr_common.training.ScanTrainer` (DIME, SelfAlign).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from itr_common.checkpoint import load_checkpoint, save_atomic
from itr_common.dist import DistInfo, all_gather_object
from itr_common.errors import fail
from itr_common.fileio import copy_file_atomic

COMPOUND_SUFFIXES = (".pth.tar", ".pt.tar")
"""Extensions kept whole: the rank goes before them (``checkpoint.pth.tar`` -> ``checkpoint.rank1.pth.tar``)."""

Writer = Callable[[Mapping[str, Any], Path], Any]


def rank_state_path(path: str | os.PathLike, rank: int) -> Path:
    """Where rank ``rank`` > 0 keeps its part of the state saved at ``path``: ``.rank{R}`` before the extension
    (``train_state_3.pt`` -> ``train_state_3.rank1.pt``; ``checkpoint.pth.tar`` -> ``checkpoint.rank1.pth.tar``).
    Rank 0's part is ``path`` itself (the single-process layout)."""
    path = Path(path)
    name = path.name
    suffix = next((s for s in COMPOUND_SUFFIXES if name.endswith(s) and len(name) > len(s)), path.suffix)
    stem = name[: len(name) - len(suffix)] if suffix else name
    return path.with_name(f"{stem}.rank{rank}{suffix}")


def save_rank_state(path: str | os.PathLike, info: DistInfo, own: Mapping[str, Any],
                    shared: Callable[[], Mapping[str, Any]], write: Writer | None = None,
                    copies: Iterable[str | os.PathLike] = ()) -> Path:
    """Save this rank's part of a train state; returns the file written.

    Rank 0 writes ``{**shared(), **own, "world_size": N}`` to ``path`` with ``write(obj, path)`` (default
    :func:`~itr_common.checkpoint.save_atomic`; a package passes its checkpoint writer to keep its layout, e.g.
    SCAN's, which also copies to ``model_best.pth.tar``). Every other rank writes ``{**own, "world_size": N}`` to
    :func:`rank_state_path` (atomically) and copies it to the rank path of each of ``copies`` (the best-model
    file when rank 0's writer makes one). ``own``: what differs between ranks (RNG streams, data position) and
    what :func:`load_rank_state` compares (``same``). No collective: callable from a signal handler."""
    path = Path(path)
    if info.rank == 0:
        state = {**shared(), **own, "world_size": info.world_size}
        (write or save_atomic)(state, path)
        return path
    own_path = save_atomic({**own, "world_size": info.world_size}, rank_state_path(path, info.rank))
    for copy in copies:
        copy_file_atomic(own_path, rank_state_path(copy, info.rank))
    return own_path


def load_rank_state(state: Mapping[str, Any], path: str | os.PathLike, info: DistInfo, same: Sequence[str],
                    per_rank: Sequence[str] = ("rng",)) -> Mapping[str, Any]:
    """This rank's part of the state ``state`` read from ``path`` (saved by :func:`save_rank_state`).

    Rank 0 (and a single process) gets ``state`` itself; rank R > 0 the contents of its own file. Refused with one
    line (:class:`~itr_common.errors.UserError`) naming the file and what was expected:

    * another number of processes than the one that saved it (data order, position and RNG are per rank);
    * rank R's file missing;
    * rank R's file saved at another update: its ``same`` entries differ from rank 0's;
    * a state without ``world_size`` (written before per-rank states) that holds a ``per_rank`` entry, resumed
      with more than one process (every rank would reuse rank 0's streams). Without any ``per_rank`` entry (an
      original checkpoint: nothing per rank was ever saved) rank R > 0 gets ``{}``: nothing of its own to restore.

    With several processes every rank must call it (a collective): the ranks exchange what they found, and all
    refuse with the first rank's problem, so a refusal on one rank never leaves the others waiting in training.
    """
    own, problem = _own_part(state, Path(path), info, same, per_rank)
    problems = [found for found in all_gather_object(problem) if found] if info.world_size > 1 else [problem]
    if problems and problems[0]:
        fail(problems[0])
    return own


def _own_part(state: Mapping[str, Any], path: Path, info: DistInfo, same: Sequence[str],
              per_rank: Sequence[str]) -> tuple[Mapping[str, Any], str | None]:
    """This rank's part of ``state`` and, when it cannot resume exactly, the one line saying why."""
    if "world_size" not in state:
        if info.world_size == 1:
            return state, None
        saved = [key for key in per_rank if key in state]
        if saved:
            return state, (f"{path}: expected per-rank {', '.join(saved)} states for a resume with {info.world_size} "
                           f"processes, found a state saved without them (rank 0's only, which every rank would "
                           f"reuse); resume it in one process or start the run again")
        return (state if info.rank == 0 else {}), None
    saved_world = int(state["world_size"])
    if saved_world != info.world_size:
        return state, (f"{path}: expected a state saved by {info.world_size} process(es) (this run), found one saved "
                       f"by {saved_world}; resume with {saved_world} process(es) (the data order and RNG streams are "
                       f"per rank)")
    if info.rank == 0:
        return state, None
    own_path = rank_state_path(path, info.rank)
    if not own_path.is_file():
        return {}, f"{own_path}: expected rank {info.rank}'s RNG state and data position beside {path.name}, found none"
    own = load_checkpoint(own_path)
    differ = [key for key in same if own.get(key) != state.get(key)]
    if differ:
        return own, (f"{own_path}: expected the update of {path.name} "
                     f"({', '.join(f'{k}={state.get(k)}' for k in differ)}), found "
                     f"{', '.join(f'{k}={own.get(k)}' for k in differ)} (the ranks stopped at different updates)")
    return own, None


__all__ = ["COMPOUND_SUFFIXES", "load_rank_state", "rank_state_path", "save_rank_state"]
