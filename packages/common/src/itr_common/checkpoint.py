"""Checkpoints that are written atomically, loaded without running code, and resumed exactly.

* :func:`save_atomic` writes to a temporary file beside the target, fsyncs it and renames it over the
  target, so a crash leaves either the old file or the new one, never a partial file.
* :func:`load_checkpoint` uses ``torch.load(weights_only=True)`` with an allow-list of what the original
  formats hold: tensors, numbers, strings, containers (built in), ``argparse.Namespace`` (DIME, VSRN and
  CAMERA save ``opt`` as one; VinVL's ``training_args.bin`` is one) and numpy scalars (epoch numbers or
  rsums computed with numpy). Anything else is refused with a :class:`UserError` before it can run.
* :func:`capture_rng_state` / :func:`restore_rng_state` cover python, numpy, torch CPU and CUDA, stored
  as plain lists and tensors so they load under ``weights_only``.
* :func:`save_training_state` / :func:`load_training_state` bundle model, optimizer, scheduler, epoch,
  step, RNG state and extras for ``--resume``.
* :func:`load_state_dict_mapped` renames keys (regexes or a function) and reports missing / unexpected /
  shape-mismatched keys readably.
* :class:`SaveOnSignal` saves once on SIGINT/SIGTERM, then exits (``itr_common.training.signals_deferred``
  holds them during a step so that what is saved belongs to one step); with several processes the ranks agree at
  each update boundary (:meth:`SaveOnSignal.at_boundary`, one scalar all_reduce) and all save that boundary.
* :func:`strip_module_prefix` drops DDP's ``module.``; documented missing/unexpected keys are logged by name.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pickle
import random
import re
import signal
import sys
import threading
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
from torch import nn

from itr_common.dist import DistInfo, all_reduce, quiesce
from itr_common.errors import UserError, require_file
from itr_common.fileio import atomic_open, copy_file_atomic
from itr_common.logging import get_logger

_LOGGER = get_logger(__name__)

ALLOWED_CONTENT = "tensors, numbers, strings, containers and argparse.Namespace"
_NUMPY_DTYPE_NAMES = (
    "BoolDType", "Int8DType", "Int16DType", "Int32DType", "Int64DType", "UInt8DType", "UInt16DType",
    "UInt32DType", "UInt64DType", "Float16DType", "Float32DType", "Float64DType",
)  # fmt: skip


def safe_globals() -> list[Any]:
    """The globals :func:`load_checkpoint` lets a checkpoint name besides torch's built-in allow-list."""
    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    allowed: list[Any] = [argparse.Namespace, np.dtype, scalar]
    # pickles written with numpy 1.x name the scalar reconstructor under numpy.core
    allowed.append((scalar, "numpy.core.multiarray.scalar"))
    allowed += [getattr(np.dtypes, name) for name in _NUMPY_DTYPE_NAMES if hasattr(np, "dtypes")]
    return allowed


# --------------------------------------------------------------------------------------- save / load
def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically: temp file in the same folder, flush, fsync, rename.

    The folder is created if needed. On any error the temp file is removed and ``path`` is untouched.
    ``torch.save`` writes through the file object, so the zip's inner folder is ``archive`` (as when
    saving to a path named ``archive``), never the temp file's name.
    """
    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle)
    return Path(path)


def save_with_best(state: Any, is_best: bool, folder: str | os.PathLike = "", *, name: str = "checkpoint.pth.tar",
                   best_name: str = "model_best.pth.tar", save: Callable[[Any, Path], Any] = save_atomic) -> Path:
    """The SCAN family's pair: ``folder/name`` written atomically by ``save`` (default :func:`save_atomic`) and,
    when ``is_best``, copied atomically to ``folder/best_name`` with the umask's mode, as the first file (a
    ``mkstemp`` copy would be 0600, unreadable to the rest of a shared group). Returns the first file's path."""
    path = Path(folder) / name
    save(state, path)
    if is_best:
        copy_file_atomic(path, Path(folder) / best_name)
    return path


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device | None = "cpu", extra_safe_globals: Sequence = ()
) -> Any:
    """Load a ``torch.save`` file without executing code from it.

    Only torch's weights-only types plus :func:`safe_globals` (and ``extra_safe_globals``) may appear.
    Raises :class:`UserError` for a missing, truncated or corrupt file, or one naming another global.
    """
    source = require_file(path, "checkpoint")
    if source.stat().st_size == 0:
        raise UserError(f"{source}: expected a PyTorch checkpoint, found an empty file")
    try:
        with torch.serialization.safe_globals([*safe_globals(), *extra_safe_globals]):
            return torch.load(source, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        if found:
            raise UserError(
                f"{source}: refusing to unpickle {found.group(1)}; checkpoints may only hold {ALLOWED_CONTENT}"
            ) from None
        raise UserError(f"{source}: not a readable PyTorch checkpoint ({_unpickler_reason(err)})") from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError) as err:
        raise UserError(f"{source}: not a readable PyTorch checkpoint ({_first_line(err)})") from None


def _unpickler_reason(err: pickle.UnpicklingError) -> str:
    """The useful sentence of torch's long weights-only error message."""
    found = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:Check the documentation|$)", str(err), re.DOTALL)
    return " ".join(found.group(1).split()) if found else _first_line(err)


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


# ------------------------------------------------------------------------------------------- RNG state
def capture_rng_state() -> dict[str, Any]:
    """Python, numpy, torch CPU (and every CUDA device's) RNG state, as weights_only-loadable values."""
    version, internal, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`capture_rng_state` returned (CUDA only when both then and now have it).

    The state may come from a checkpoint loaded with ``map_location="cuda"``: every generator state is
    moved back to the CPU first, where the RNG setters expect it. CUDA states are restored for the
    devices present now (fewer or more GPUs than when saved: the common ones).
    """
    try:
        py, npy = state["python"], state["numpy"]
        random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
        keys = npy["keys"].cpu().numpy() if torch.is_tensor(npy["keys"]) else npy["keys"]
        np.random.set_state((npy["kind"], np.asarray(keys, dtype=np.uint32), npy["pos"], npy["has_gauss"],
                             npy["cached_gaussian"]))
        torch.set_rng_state(state["torch"].cpu())
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise UserError(f"rng state: expected the dict capture_rng_state() makes, found a bad one ({err})") from None
    if "cuda" in state and torch.cuda.is_available():
        for index, cuda_state in enumerate(list(state["cuda"])[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), index)


@contextlib.contextmanager
def rng_preserved() -> Iterator[None]:
    """Run a block (validation, evaluation) without moving any RNG: its state is restored afterwards, so a
    run's random draws do not depend on whether, or how often, it was validated."""
    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)


# -------------------------------------------------------------------------------------- training state
@dataclass(frozen=True)
class ResumePoint:
    """Where a resumed run continues: the epoch and step saved, and the caller's extras."""

    epoch: int
    step: int
    extra: dict[str, Any] = field(default_factory=dict)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def save_training_state(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    epoch: int = 0,
    step: int = 0,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Atomically save everything ``--resume`` needs (model unwrapped from DDP, RNG state included).

    ``extra`` holds anything else loadable under weights_only (best rsum, ``Amp.state_dict()``, ...).
    """
    state = {
        "model": _unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "epoch": int(epoch),
        "step": int(step),
        "rng": capture_rng_state(),
        "extra": dict(extra or {}),
    }
    return save_atomic(state, path)


def load_training_state(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    map_location: str | torch.device | None = "cpu",
    restore_rng: bool = True,
) -> ResumePoint:
    """Load :func:`save_training_state`'s file into ``model`` / ``optimizer`` / ``scheduler``.

    The model is loaded strictly (a mismatch is a :class:`UserError` listing the keys).
    """
    state = load_checkpoint(path, map_location=map_location)
    required = ("model", "optimizer", "scheduler", "epoch", "step", "rng", "extra")
    if not isinstance(state, dict) or any(key not in state for key in required):
        found = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise UserError(f"{path}: expected a training state with keys {list(required)}, found {found}")
    load_state_dict_mapped(_unwrap(model), state["model"], source=str(path))
    for name, target in (("optimizer", optimizer), ("scheduler", scheduler)):
        if target is None:
            continue
        if state[name] is None:
            raise UserError(f"{path}: expected a saved {name} state to resume, found none")
        target.load_state_dict(state[name])
    if restore_rng:
        restore_rng_state(state["rng"])
    return ResumePoint(state["epoch"], state["step"], state["extra"])


# ------------------------------------------------------------------------------------ mapped loading
Rename = Sequence[tuple[str, str]] | Callable[[str], str | None]


@dataclass
class LoadReport:
    """How a state dict matched a module: keys loaded, missing, unexpected and with the wrong shape."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit: int = 10) -> str:
        """One line: counts and the first ``limit`` keys of each problem."""

        def listing(items: list[str]) -> str:
            more = f", ... {len(items) - limit} more" if len(items) > limit else ""
            return ", ".join(items[:limit]) + more

        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing ({listing(self.missing)})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected ({listing(self.unexpected)})")
        if self.mismatched:
            shapes = [f"{k}: model {tuple(m)} vs checkpoint {tuple(c)}" for k, m, c in self.mismatched]
            parts.append(f"{len(self.mismatched)} shape mismatches ({listing(shapes)})")
        return "; ".join(parts) if parts else f"all {len(self.loaded)} keys matched"


def rename_keys(keys: Iterable[str], rename: Rename | None) -> dict[str, str]:
    """``{old_key: new_key}`` after applying ``rename``; keys a callable maps to None are dropped.

    A list of ``(regex, replacement)`` pairs is applied in order with ``re.sub`` to every key.
    """
    mapping: dict[str, str] = {}
    for key in keys:
        if rename is None:
            new = key
        elif callable(rename):
            new = rename(key)
        else:
            new = key
            for pattern, replacement in rename:
                new = re.sub(pattern, replacement, new)
        if new is not None:
            mapping[key] = new
    return mapping


def strip_module_prefix(state_dict: Mapping[str, Any], module: nn.Module | None = None) -> dict[str, Any]:
    """``state_dict`` without the ``module.`` prefix DDP / DataParallel add, when every key has it.

    Left as is when some key lacks it, or when ``module``'s own keys start with ``module.``.
    """
    keys = list(state_dict)
    if not keys or not all(k.startswith("module.") for k in keys):
        return dict(state_dict)
    if module is not None and any(k.startswith("module.") for k in module.state_dict()):
        return dict(state_dict)
    return {k[len("module."):]: v for k, v in state_dict.items()}


Documented = Mapping[str, str]
"""``{regex: reason}``: keys matching ``regex`` (``re.fullmatch``) are allowed, and logged with ``reason``."""


def _documented(keys: list[str], allowed: Documented) -> tuple[list[str], dict[str, list[str]]]:
    """Split ``keys`` into the undocumented ones and ``{reason: [keys]}`` of the documented ones."""
    rest: list[str] = []
    named: dict[str, list[str]] = {}
    for key in keys:
        reason = next((why for pattern, why in allowed.items() if re.fullmatch(pattern, key)), None)
        if reason is None:
            rest.append(key)
        else:
            named.setdefault(reason, []).append(key)
    return rest, named


def load_state_dict_mapped(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    rename: Rename | None = None,
    strict: bool = True,
    source: str = "state dict",
    allow_missing: Documented | None = None,
    ignore_unexpected: Documented | None = None,
) -> LoadReport:
    """Load ``state_dict`` into ``module`` after renaming its keys; report what matched.

    A DDP ``module.`` prefix on every key is stripped first (:func:`strip_module_prefix`).
    strict: any missing, unexpected or shape-mismatched key raises :class:`UserError` naming ``source``
    and the keys, and nothing is loaded, except the documented cases: missing keys matching a regex
    of ``allow_missing`` and unexpected keys matching one of ``ignore_unexpected`` (``{regex:
    reason}``), which are logged at INFO by name with their reason (and still listed in the
    report). Non-strict: the matching keys are loaded and the report says what was not.
    """
    state_dict = strip_module_prefix(state_dict, module)
    mapping = rename_keys(state_dict, rename)
    renamed: dict[str, torch.Tensor] = {}
    for old, new in mapping.items():
        if new in renamed:
            clash = next(k for k, v in mapping.items() if v == new and k != old)
            raise UserError(f"{source}: keys '{clash}' and '{old}' are both renamed to '{new}'")
        renamed[new] = state_dict[old]

    expected = module.state_dict()
    report = LoadReport()
    report.missing = [k for k in expected if k not in renamed]
    report.unexpected = [k for k in renamed if k not in expected]
    for key, value in renamed.items():
        if key not in expected:
            continue
        if not isinstance(value, torch.Tensor):
            raise UserError(f"{source}: expected a tensor for key '{key}', found {type(value).__name__}")
        if tuple(expected[key].shape) != tuple(value.shape):
            report.mismatched.append((key, tuple(expected[key].shape), tuple(value.shape)))
        else:
            report.loaded.append(key)

    missing, missing_ok = _documented(report.missing, allow_missing or {})
    unexpected, unexpected_ok = _documented(report.unexpected, ignore_unexpected or {})
    if strict and (missing or unexpected or report.mismatched):
        problems = LoadReport(report.loaded, missing, unexpected, report.mismatched)
        raise UserError(f"{source}: does not match the model: {problems.summary()}")
    for what, named in (("missing (left as initialised)", missing_ok), ("unexpected (ignored)", unexpected_ok)):
        for reason, keys in named.items():
            _LOGGER.info("%s: %d keys %s, %s: %s", source, len(keys), what, reason, ", ".join(keys))
    module.load_state_dict({k: renamed[k] for k in report.loaded}, strict=False)
    return report


# ------------------------------------------------------------------------------------------- signals
SIGNAL_SAVED = "received: saved"
"""What every save on a signal prints after the signal's name (:meth:`SaveOnSignal.announce`); the conformance
kit's kill + resume checks look for it."""


class SaveOnSignal:
    """Within ``with SaveOnSignal(save_fn, info=...) as guard:``, SIGINT/SIGTERM save once at an update boundary,
    then exit ``SystemExit(128 + signal)``: 130 for SIGINT, 143 for SIGTERM.

    * One process (``info`` None or ``info.world_size == 1``): the handler itself calls ``save_fn()`` and exits.
      Steps run under :func:`itr_common.training.signals_deferred`, so the handler runs between two of them: at
      the last update boundary. :meth:`at_boundary` does nothing.
    * Several processes (``info.world_size > 1``): the handler only records the signal (a rank saving alone from
      its handler could save another update than a peer still in its step, and a peer left waiting in a
      collective dies with a gloo error). Every rank calls :meth:`at_boundary` at every update boundary, the same
      number of times (it is a collective); the ranks agree there whether any of them received a signal, and if
      so every rank calls ``save_fn()`` for that same boundary, waits at a barrier until all have saved (so that
      torchrun, seeing one exit, cannot kill a slower saver), and exits ``128 + signal``. A signal reaching only
      one rank stops them all. Cost: one scalar all_reduce (MAX, on ``info.device``) per :meth:`at_boundary`
      call, only when ``world_size > 1``. A signal received after the run's last :meth:`at_boundary` is ignored:
      the run ends as usual.

    After saving, every trainer says so in the same words, one line on stderr (:meth:`announce`):
    ``SIGTERM received: saved <what save_fn returned> (rank R); <hint>`` (the rank only with several processes;
    ``hint`` tells how to continue, by default ``continue with --resume``). ``save_fn`` returns what it saved and
    where the run stood, e.g. ``"runs/x/checkpoint.pth.tar at epoch 2, batch 5"``.

    Signals arriving while saving are ignored. The previous handlers come back when the block ends (after a stop
    by :meth:`at_boundary`, signals stay ignored while the process exits). Outside the main thread (where Python
    cannot install handlers) the block runs without them.
    """

    def __init__(self, save_fn: Callable[[], str | None], signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM),
                 info: DistInfo | None = None, hint: str = "continue with --resume") -> None:
        self.save_fn = save_fn
        self.hint = hint
        self.rank = info.rank if info is not None else 0
        self.signals = tuple(signals)
        self.received: int | None = None
        self.agreed = info is not None and info.world_size > 1
        self.device = info.device if info is not None else torch.device("cpu")
        self._previous: dict[int, Any] = {}
        self._stopping = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            return  # already recorded, or saving
        self.received = signum
        if self.agreed:
            return  # at_boundary() acts on it, on every rank at once
        self.announce(signum, self.save_fn())
        raise SystemExit(128 + signum)

    def announce(self, signum: int, saved: str | None) -> str:
        """Print (stderr, flushed) and return the line saying what the signal saved and how to continue."""
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        rank = f" (rank {self.rank})" if self.agreed else ""
        line = f"{name} {SIGNAL_SAVED} {saved or 'the run'}{rank}; {self.hint}"
        print(line, file=sys.stderr, flush=True)
        return line

    def stop_requested(self) -> int:
        """The signal to stop for at this boundary (0: none). With several processes a collective: the largest
        signal number any rank has received, the same on every rank; in one process the one received, if any."""
        if not self.agreed:
            return self.received or 0
        flag = torch.tensor([float(self.received or 0)], device=self.device)
        return int(all_reduce(flag, op="max").item())

    def at_boundary(self) -> None:
        """Call at every update boundary on every rank: when several processes run and any rank has received a
        signal, save this boundary on every rank and exit ``128 + signal`` (one process: nothing, the handler
        saves)."""
        if not self.agreed:
            return
        signum = self.stop_requested()
        if not signum:
            return
        self.received = self.received or signum  # a rank that got none logs the one it stops for
        self._stopping = True
        self.announce(self.received, self.save_fn())
        quiesce("stop")  # every rank's file is written, and no peer still talks to it, before any exits
        raise SystemExit(128 + signum)

    def __enter__(self) -> SaveOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            # stopping after at_boundary(): the process exits 128 + signal; a later signal (torchrun's to the
            # others once one rank has exited) must not turn that into a death by signal
            signal.signal(sig, signal.SIG_IGN if self._stopping else handler)
        self._previous.clear()

