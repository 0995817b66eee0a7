"""The conformance checks every paper package runs on itself, the same way (no pytest needed).

Each check raises :class:`ConformanceError` (an ``AssertionError``, so pytest shows it as a failed
assertion) with what was expected and what happened. A package's tests call them with its own
command lines, callables and checkpoints:

* :func:`check_learns`: training on the synthetic world beats chance by far, the same run on
  shuffled pairs does not (:func:`honesty_worlds`, ``metrics.chance_recalls``);
* :func:`check_resume_exact`: a CLI run killed with SIGTERM and continued with its resume flag ends
  with the same tensors, bit for bit, as an uninterrupted run; :func:`check_two_process_resume_exact` the
  same under ``torchrun --nproc_per_node 2`` (every rank resumes its own RNG streams);
* :func:`check_checkpoint_round_trip`: save -> load gives the same tensors; a missing or an
  unexpected key is refused naming it; a DDP ``module.`` prefix loads;
* :func:`check_usage_error`: bad input exits 2 with one line naming the culprit, before any work;
* :func:`check_console_script`: the installed console script exits 0 on success with no repr;
* :func:`check_sigterm_message`: SIGTERM at any time gives a message and status 143, never -15.

Helpers: :func:`invoke` (a ``main`` in-process or a command in a subprocess, with its exit code
and output), :func:`run_command`, :func:`console_script`, :func:`subprocess_env`,
:func:`single_thread`, :func:`assert_same_tensors`, :func:`edit_checkpoint`, :func:`tree_listing`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from itr_common.bench import single_thread
from itr_common.errors import UserError

Command = Sequence[str | os.PathLike]
Target = Callable[..., Any] | Command

SIGTERM_STATUS = 128 + signal.SIGTERM
REPR_LINE = re.compile(r"^[A-Za-z_][\w.]*\(\w+=|object at 0x[0-9a-f]+")


class ConformanceError(AssertionError):
    """A conformance check failed (an AssertionError: pytest reports it as a failed assertion)."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConformanceError(message)


# ---------------------------------------------------------------------------------- environment
def subprocess_env(**extra: str) -> dict[str, str]:
    """``os.environ`` for a child process: one thread, offline Hugging Face, fixed hash seed."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONHASHSEED="0", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def console_script(name: str) -> Path:
    """The installed console script ``name`` beside the running interpreter (``.venv/bin/dime-train``)."""
    path = Path(sys.executable).parent / name
    _require(path.is_file(), f"console script {name}: expected {path} (is the package installed with pip?)")
    return path


def python_module(module: str) -> list[str]:
    """The command ``python -m module`` with the running interpreter."""
    return [sys.executable, "-m", module]


# ----------------------------------------------------------------------------------------- invoke
@dataclass
class Outcome:
    """How a command ended: exit status, what it printed, and (in-process) what ``main`` returned."""

    code: int
    stdout: str
    stderr: str
    returned: Any = None

    def lines(self, stream: str = "stderr") -> list[str]:
        """The non-blank lines of ``stderr`` (or ``stdout``)."""
        return [line for line in getattr(self, stream).splitlines() if line.strip()]

    def tail(self, n: int = 2000) -> str:
        return f"stdout: ...{self.stdout[-n:]}\nstderr: {stderr_report(self.stderr, n)}"


_WORKER_FAILURE = re.compile(r"terminate called|what\(\)|Error|error:|Traceback|Abort|Signal \d+")


def stderr_report(stderr: str, n: int = 2000) -> str:
    """What an assertion on a failed run shows: the lines of ``stderr`` that say why a process failed (C++
    ``terminate called`` / ``what()``, Python errors; a torchrun failure prints a worker's own reason above a long
    summary, out of reach of a plain tail), then its last ``n`` characters."""
    reasons = [line for line in stderr.splitlines() if _WORKER_FAILURE.search(line)][:20]
    head = "reasons:\n" + "\n".join(reasons) + "\n" if reasons else ""
    return f"{head}...{stderr[-n:]}"


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    return 1  # sys.exit("message") / sys.exit(object): printed, status 1


def run_command(command: Command, *, cwd: str | os.PathLike | None = None, env: Mapping[str, str] | None = None,
                timeout: float = 600) -> Outcome:
    """Run ``command`` in a subprocess (:func:`subprocess_env` unless ``env``) and return its :class:`Outcome`."""
    proc = subprocess.run([os.fspath(c) for c in command], cwd=cwd, env=dict(env or subprocess_env()),
                          capture_output=True, text=True, timeout=timeout)
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


def invoke(target: Target, argv: Sequence[str | os.PathLike] = (), *, cwd: str | os.PathLike | None = None,
           env: Mapping[str, str] | None = None, timeout: float = 600) -> Outcome:
    """Run a ``main(argv)`` in-process, or a command (``[python, script]``, a console script) in a subprocess.

    In-process, stdout/stderr are captured and ``SystemExit`` becomes the exit code; the code of a
    ``main`` that returns is what ``sys.exit(main())`` would give (None -> 0, an int, else 1).
    """
    argv = [os.fspath(a) for a in argv]
    if not callable(target):
        return run_command([*target, *argv], cwd=cwd, env=env, timeout=timeout)
    out, err = io.StringIO(), io.StringIO()
    returned: Any = None
    with contextlib.ExitStack() as stack:
        if cwd is not None:
            stack.enter_context(contextlib.chdir(cwd))
        stack.enter_context(contextlib.redirect_stdout(out))
        stack.enter_context(contextlib.redirect_stderr(err))
        try:
            returned = target(argv)
            code = _exit_code(returned)
        except SystemExit as exc:
            code = _exit_code(exc.code)
    return Outcome(code, out.getvalue(), err.getvalue(), returned)


# ------------------------------------------------------------------------------------ (d) bad input
def tree_listing(path: str | os.PathLike) -> dict[str, tuple[int, int]] | None:
    """``{relative path: (size, mtime_ns)}`` of every file and folder under ``path``; None when absent."""
    root = Path(path)
    if not root.exists():
        return None
    if root.is_file():
        stat = root.stat()
        return {".": (stat.st_size, stat.st_mtime_ns)}
    listing = {}
    for item in sorted(root.rglob("*")):
        stat = item.lstat()
        listing[str(item.relative_to(root))] = (stat.st_size if item.is_file() else -1, stat.st_mtime_ns)
    return listing


def check_usage_error(target: Target, argv: Sequence[str | os.PathLike], *needles: str,
                      untouched: Sequence[str | os.PathLike] = (), allow_notices: bool = False,
                      cwd: str | os.PathLike | None = None, env: Mapping[str, str] | None = None,
                      timeout: float = 600) -> str:
    """Bad input: exit status 2, exactly one stderr line holding every ``needle``, nothing written.

    ``target`` is a ``main`` (run in-process) or a command (subprocess). Each path in ``untouched``
    (output folders and files) must look the same afterwards: not created if it was absent, no file
    added, removed or rewritten inside it. ``allow_notices`` ignores ``notice:`` / ``warning:``
    lines printed before the error. Returns the error line.
    """
    before = {Path(p): tree_listing(p) for p in untouched}
    outcome = invoke(target, argv, cwd=cwd, env=env, timeout=timeout)
    lines = outcome.lines()
    if allow_notices:
        lines = [line for line in lines if not line.lower().startswith(("notice:", "warning:"))]
    _require(outcome.code == 2, f"expected exit status 2 for bad input {list(map(str, argv))}, found "
                                f"{outcome.code}\n{outcome.tail()}")
    _require("Traceback" not in outcome.stderr, f"expected one error line, found a traceback\n{outcome.tail()}")
    _require(len(lines) == 1, f"expected exactly one stderr line, found {len(lines)}: {lines[:6]}")
    line = lines[0]
    for needle in needles:
        _require(needle in line, f"expected the error line to name {needle!r}, found: {line}")
    for path, listing in before.items():
        after = tree_listing(path)
        if listing is None:
            _require(after is None, f"bad input must be refused before any work, but {path} was created: "
                                    f"{sorted(after or {})[:8]}")
        else:
            _require(after == listing, f"bad input must be refused before any work, but {path} changed: "
                                       f"{_diff_listing(listing, after or {})}")
    return line


def _diff_listing(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    return f"added {added[:8]}, removed {removed[:8]}, changed {changed[:8]}"


# ------------------------------------------------------------------------------ (e) console script
def check_console_script(name: str, argv: Sequence[str | os.PathLike] = (), *, cwd: str | os.PathLike | None = None,
                         env: Mapping[str, str] | None = None, timeout: float = 600) -> Outcome:
    """Run the installed console script ``name`` as a user does; it must exit 0 and print no repr.

    The entry point must be a ``main`` decorated with :func:`itr_common.errors.cli_entry` (checked
    through the installed package metadata).
    """
    from importlib.metadata import entry_points

    found = entry_points(group="console_scripts", name=name)
    _require(bool(found), f"console script {name}: not in any installed package's entry points")
    function = next(iter(found)).load()
    _require(getattr(function, "is_cli_entry", False),
             f"console script {name}: expected main decorated with itr_common.errors.cli_entry, found {function!r}")
    outcome = run_command([console_script(name), *argv], cwd=cwd, env=env, timeout=timeout)
    _require(outcome.code == 0, f"{name} {' '.join(map(str, argv))}: expected exit status 0, found "
                                f"{outcome.code}\n{outcome.tail()}")
    for stream in ("stdout", "stderr"):
        lines = outcome.lines(stream)
        reprs = [line for line in lines[-3:] if REPR_LINE.search(line)]
        if reprs:
            raise ConformanceError(f"{name}: expected no repr of a result object on {stream}, found {reprs[0][:200]}")
    return outcome


# ------------------------------------------------------------------------------ SIGTERM at start-up
def check_sigterm_message(command: Command, *, when: Callable[[], bool] | float = 0.0,
                          cwd: str | os.PathLike | None = None, env: Mapping[str, str] | None = None,
                          timeout: float = 300) -> Outcome:
    """SIGTERM a command (once ``when()`` is true, or after ``when`` seconds): status 143 and a message.

    The command must be past its imports (a ``cli_entry`` main running) when signalled, so wait for
    something it prints or writes, or long enough.
    """
    with _started(command, cwd, dict(env or subprocess_env()), subprocess.PIPE) as proc:
        _wait_for(proc, when, timeout)
        stdout, stderr = _sigterm(proc, timeout)
    outcome = Outcome(proc.returncode, stdout, stderr)
    _require(outcome.code == SIGTERM_STATUS, f"expected status {SIGTERM_STATUS} after SIGTERM, found "
                                             f"{outcome.code}\n{outcome.tail()}")
    _require("SIGTERM" in outcome.stderr or "signal" in outcome.stderr.lower(),
             f"expected a message naming the signal on stderr, found\n{outcome.tail()}")
    return outcome


@contextlib.contextmanager
def _started(command: Command, cwd: str | os.PathLike | None, env: Mapping[str, str],
             stdout: int) -> Iterator[subprocess.Popen]:
    """``command`` started (text, stderr piped); killed and reaped on the way out if it still runs."""
    proc = subprocess.Popen([os.fspath(c) for c in command], cwd=cwd, env=env, stdout=stdout, stderr=subprocess.PIPE,
                            text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _sigterm(proc: subprocess.Popen, timeout: float) -> tuple[str | None, str]:
    """SIGTERM ``proc`` and collect what it still prints: ``(stdout, stderr)``."""
    proc.send_signal(signal.SIGTERM)
    return proc.communicate(timeout=timeout)


def _wait_for(proc: subprocess.Popen, when: Callable[[], bool] | float, timeout: float) -> None:
    if not callable(when):
        time.sleep(float(when))
        _require(proc.poll() is None, f"the command ended (status {proc.returncode}) before it could be signalled")
        return
    deadline = time.monotonic() + timeout
    while not when():
        _require(proc.poll() is None, f"the command ended (status {proc.returncode}) before it could be signalled")
        _require(time.monotonic() < deadline, f"the kill condition did not happen within {timeout} s")
        time.sleep(0.05)


# --------------------------------------------------------------------------------- saved files
def check_saved_files(folder: str | os.PathLike, names: Sequence[str]) -> None:
    """Each of ``names`` under ``folder`` exists with the mode a new file gets under this umask (a checkpoint copied
    through ``mkstemp`` is 0600, unreadable to the rest of a shared group), and no ``*.tmp`` file of an atomic
    write is left."""
    from itr_common.fileio import _umask

    root = Path(folder)
    expected = 0o666 & ~_umask()
    modes = {name: stat.S_IMODE((root / name).stat().st_mode) if (root / name).is_file() else None for name in names}
    wrong = {name: (oct(mode) if mode is not None else "missing") for name, mode in modes.items() if mode != expected}
    _require(not wrong, f"{root}: expected {list(names)} with mode {oct(expected)} (the umask's), found {wrong}")
    leftovers = sorted(p.name for p in root.iterdir() if p.name.endswith(".tmp"))
    _require(not leftovers, f"{root}: expected no temporary files of an atomic write, found {leftovers}")


# --------------------------------------------------------------------------------- tensor compare
def assert_same_tensors(expected: Any, found: Any, where: str = "") -> None:
    """Every tensor in ``found`` equals the one in ``expected`` bit for bit (same nesting, keys, dtypes).

    Dicts, lists, tuples and ``argparse.Namespace`` are walked; other values compared with ``==``.
    """
    label = where or "<root>"
    if isinstance(expected, torch.Tensor):
        _require(isinstance(found, torch.Tensor), f"{label}: expected a tensor, found {type(found).__name__}")
        _require(expected.shape == found.shape and expected.dtype == found.dtype,
                 f"{label}: expected {tuple(expected.shape)} {expected.dtype}, "
                 f"found {tuple(found.shape)} {found.dtype}")
        same = torch.equal(expected.cpu(), found.cpu())
        if not same:
            diff = (expected.cpu().double() - found.cpu().double()).abs()
            detail = f"max abs difference {diff.max().item():.3g}" if diff.numel() else "differs"
            raise ConformanceError(f"{label}: tensors differ ({detail})")
        return
    if isinstance(expected, argparse.Namespace):
        expected, found = vars(expected), vars(found) if isinstance(found, argparse.Namespace) else found
    if isinstance(expected, Mapping):
        _require(isinstance(found, Mapping), f"{label}: expected a mapping, found {type(found).__name__}")
        missing = [k for k in expected if k not in found]
        extra = [k for k in found if k not in expected]
        _require(not missing and not extra, f"{label}: keys differ: missing {missing[:8]}, unexpected {extra[:8]}")
        for key in expected:
            assert_same_tensors(expected[key], found[key], f"{where}.{key}" if where else str(key))
        return
    if isinstance(expected, list | tuple):
        _require(isinstance(found, list | tuple) and len(found) == len(expected),
                 f"{label}: expected a sequence of {len(expected)}, found {type(found).__name__}")
        for index, (a, b) in enumerate(zip(expected, found, strict=True)):
            assert_same_tensors(a, b, f"{where}[{index}]")
        return
    _require(expected == found, f"{label}: expected {expected!r}, found {found!r}")


# ------------------------------------------------------------------------------- (c) checkpoints
def state_dicts_in(obj: Any, where: str = "", min_tensors: int = 4) -> list[tuple[str, Mapping[str, Any]]]:
    """``(path, mapping)`` of every state dict (str keys, tensor values, at least ``min_tensors``) in ``obj``."""
    found: list[tuple[str, Mapping[str, Any]]] = []
    if isinstance(obj, Mapping):
        values = list(obj.values())
        if (len(values) >= min_tensors and all(isinstance(k, str) for k in obj)
                and all(isinstance(v, torch.Tensor) for v in values)):
            return [(where, obj)]
        for key, value in obj.items():
            found += state_dicts_in(value, f"{where}.{key}" if where else str(key), min_tensors)
    elif isinstance(obj, list | tuple):
        for index, value in enumerate(obj):
            found += state_dicts_in(value, f"{where}[{index}]", min_tensors)
    return found


def _replace_at(obj: Any, where: str, new: Any) -> Any:
    """A copy of ``obj`` with the state dict at path ``where`` (as :func:`state_dicts_in` names it) replaced."""
    if where == "":
        return new
    match = re.match(r"^\[(\d+)\](.*)$", where) or re.match(r"^\.?([^.\[]+)(.*)$", where)
    head, rest = match.group(1), match.group(2)
    if isinstance(obj, list | tuple):
        items = list(obj)
        items[int(head)] = _replace_at(items[int(head)], rest, new)
        return type(obj)(items) if isinstance(obj, tuple) else items
    copy = dict(obj)
    copy[head] = _replace_at(obj[head], rest, new)
    return copy


def edit_checkpoint(source: str | os.PathLike, target: str | os.PathLike, edit: str,
                    key: str | None = None, which: str | None = None) -> str:
    """Write a copy of checkpoint ``source`` to ``target`` with its largest state dict edited; return the key.

    ``edit``: ``"missing"`` drops ``key`` (default: a key from the middle), ``"unexpected"`` adds
    ``key`` (default: ``<some key>_unexpected``), ``"module"`` prefixes every key of every state dict
    with ``module.`` (as DDP saves). ``which`` picks the state dict by its path instead.
    """
    from itr_common.checkpoint import load_checkpoint

    state = load_checkpoint(source)
    dicts = state_dicts_in(state)
    _require(bool(dicts), f"{source}: no state dict (string keys, tensor values) found in the checkpoint")
    if edit == "module":
        for where, mapping in dicts:
            state = _replace_at(state, where, {f"module.{k}": v for k, v in mapping.items()})
        torch.save(state, target)
        return "module."
    if which is None:
        where, mapping = max(dicts, key=lambda item: len(item[1]))
    else:
        where, mapping = next(((w, m) for w, m in dicts if w == which), (None, None))
        _require(mapping is not None, f"{source}: no state dict at {which!r}; found {[w for w, _ in dicts]}")
    keys = list(mapping)
    if edit == "missing":
        key = key or keys[len(keys) // 2]
        _require(key in mapping, f"{source}: no key {key!r} to drop in the state dict at {where!r}")
        new = {k: v for k, v in mapping.items() if k != key}
    elif edit == "unexpected":
        key = key or f"{keys[len(keys) // 2]}_unexpected"
        new = {**mapping, key: torch.zeros(1)}
    else:
        raise ValueError(f"edit: expected 'missing', 'unexpected' or 'module', found {edit!r}")
    torch.save(_replace_at(state, where, new), target)
    return key


def _refusal(load: Callable[[Path], Any], path: Path) -> str:
    """The one-line message with which ``load(path)`` refuses (a UserError, or exit 2 with its line)."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            load(path)
    except UserError as exc:
        return str(exc)
    except SystemExit as exc:
        _require(exc.code == 2, f"{path}: expected the load to be refused with status 2, found {exc.code}")
        return err.getvalue().strip()
    raise ConformanceError(f"{path}: expected the load to be refused (UserError naming the key), but it loaded")


def check_checkpoint_round_trip(model: torch.nn.Module, save: Callable[[torch.nn.Module, Path], Any],
                                load: Callable[[Path], Any], folder: str | os.PathLike, *,
                                state_of: Callable[[Any], Mapping[str, Any]] | None = None,
                                drop_key: str | None = None, which: str | None = None,
                                ddp_prefix: bool = True) -> None:
    """save -> load gives the same tensors; a missing / an unexpected key is refused naming it.

    ``save(model, path)`` writes the package's checkpoint file; ``load(path)`` reads it back the way
    the package's commands do (returning a model, or anything ``state_of`` turns into a state dict;
    a ``module`` default: its ``state_dict()``). With ``ddp_prefix``, the same file with every key
    prefixed ``module.`` (as saved from DDP) must load to the same tensors.
    """
    state_of = state_of or (lambda loaded: loaded.state_dict())
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    path = root / "roundtrip.ckpt"
    save(model, path)
    reference = {k: v.detach().clone() for k, v in model.state_dict().items()}
    assert_same_tensors(reference, state_of(load(path)), "round trip")
    for edit in ("missing", "unexpected"):
        bad = root / f"{edit}.ckpt"
        key = edit_checkpoint(path, bad, edit, key=drop_key if edit == "missing" else None, which=which)
        message = _refusal(load, bad)
        _require(key in message and edit in message,
                 f"{bad}: expected the refusal to name the {edit} key {key!r}, found: {message}")
        _require("\n" not in message.strip(), f"{bad}: expected a one-line refusal, found: {message}")
    if ddp_prefix:
        prefixed = root / "ddp.ckpt"
        edit_checkpoint(path, prefixed, "module")
        assert_same_tensors(reference, state_of(load(prefixed)), "module.-prefixed")


# ------------------------------------------------------------------------------ (b) exact resume
@dataclass
class ResumeCheck:
    """What :func:`check_resume_exact` saw: the kill's exit status and the final files compared."""

    killed_status: int
    full: Path
    resumed: Path
    resume_output: Outcome


def _glob_condition(root: Path, pattern: str) -> Callable[[], bool]:
    return lambda: any(root.glob(pattern))


def _wait_for_kill_condition(proc: subprocess.Popen, condition: Callable[[], bool], what: str, timeout: float,
                             output: Callable[[], str]) -> None:
    """Poll ``condition`` until it holds; a run that ends first or a ``timeout`` (s) fails the check, the run's
    ``output()`` tail in the message."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise ConformanceError(f"the run to kill ended (status {proc.returncode}) before {what}; give it more "
                                   f"steps\n{output()}")
        _require(time.monotonic() < deadline, f"{what} not met within {timeout} s")
        time.sleep(0.01)


def _require_signal_saved(output: str, what: str, ranks: int = 1) -> None:
    """The run said what its SIGTERM saved, in the words every trainer shares
    (:meth:`itr_common.checkpoint.SaveOnSignal.announce`): ``SIGTERM received: saved <file> ...``, and with
    several processes one such line per rank."""
    from itr_common.checkpoint import SIGNAL_SAVED

    lines = [line for line in output.splitlines() if f"SIGTERM {SIGNAL_SAVED} " in line]
    if ranks == 1:
        said = bool(lines)
    else:
        said = {m.group(1) for line in lines if (m := re.search(r"\(rank (\d+)\)", line))} == {
            str(rank) for rank in range(ranks)}
    _require(said, f"{what}: expected 'SIGTERM {SIGNAL_SAVED} <file> ...' on stderr"
             + ("" if ranks == 1 else f" from each of the {ranks} ranks") + f", found\n...{output[-2000:]}")


def check_resume_exact(command: Callable[[Path, bool], Command], folder: str | os.PathLike, *,
                       final: str | Callable[[Path], Path], kill_when: str | Callable[[Path], bool],
                       resume_evidence: str, select: Callable[[Any], Any] | None = None,
                       load: Callable[[Path], Any] | None = None, cwd: str | os.PathLike | None = None,
                       env: Mapping[str, str] | None = None, timeout: float = 600) -> ResumeCheck:
    """Kill + resume ends with the same tensors, bit for bit, as the same run left alone.

    ``command(run_dir, resume)`` is the full command line of a run writing into ``run_dir`` (with
    the package's resume flag when ``resume``). Three runs under ``folder``: ``full`` uninterrupted;
    ``killed`` sent SIGTERM once ``kill_when`` holds (a glob under the run dir, e.g. the first
    checkpoint's name, or a callable of the run dir), which must end with status 143; then the same
    run dir continued with ``resume=True``, which must exit 0 and print ``resume_evidence`` (a
    regex: proof that it continued instead of starting over). ``final`` (a path under the run dir,
    or a callable) names the file compared: ``load`` (default: ``load_checkpoint``), then ``select``
    (default: all of it) from both runs must hold identical tensors. The runs see no GPU unless ``env``
    says otherwise (CUDA kernels are not bit-reproducible run to run).
    """
    from itr_common.checkpoint import load_checkpoint

    root = Path(folder)
    load = load or load_checkpoint
    select = select or (lambda state: state)
    env = dict(env or subprocess_env(CUDA_VISIBLE_DEVICES=""))  # bit for bit is a CPU promise
    final_of = final if callable(final) else (lambda run: run / final)
    full, killed = root / "full", root / "killed"

    done = run_command(command(full, False), cwd=cwd, env=env, timeout=timeout)
    _require(done.code == 0, f"uninterrupted run: expected status 0, found {done.code}\n{done.tail()}")

    condition = _glob_condition(killed, kill_when) if isinstance(kill_when, str) else (lambda: kill_when(killed))
    with _started(command(killed, False), cwd, dict(env or subprocess_env()), subprocess.DEVNULL) as proc:
        _wait_for_kill_condition(proc, condition, f"the kill condition {kill_when!r}", timeout,
                                 lambda: "stderr: ..." + proc.stderr.read()[-2000:])
        _, stderr = _sigterm(proc, timeout)
    _require(proc.returncode == SIGTERM_STATUS,
             f"killed run: expected status {SIGTERM_STATUS} (saved, then exited), found {proc.returncode}; the kill "
             f"must land before the run ends\nstderr: {stderr_report(stderr)}")
    _require_signal_saved(stderr, "killed run")

    resumed = run_command(command(killed, True), cwd=cwd, env=env, timeout=timeout)
    _require(resumed.code == 0, f"resumed run: expected status 0, found {resumed.code}\n{resumed.tail()}")
    _require(re.search(resume_evidence, resumed.stdout + resumed.stderr) is not None,
             f"resumed run: expected output matching {resume_evidence!r} (it must continue, not start over)\n"
             f"{resumed.tail()}")
    assert_same_tensors(select(load(final_of(full))), select(load(final_of(killed))), "final state")
    return ResumeCheck(proc.returncode, final_of(full), final_of(killed), resumed)


LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE", "GROUP_RANK",
               "TORCHELASTIC_RUN_ID")
"""What a launcher sets in a worker's environment; a test's own torchrun must not inherit them."""


def torchrun_env(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """The environment for a test's own torchrun: ``base`` (default :func:`subprocess_env`: one thread, ...) with
    ``extra``, less :data:`LAUNCH_VARS` (a suite itself run under a launcher must not hand its rank down)."""
    env = dict(subprocess_env() if base is None else base)
    env.update(extra)
    return {key: value for key, value in env.items() if key not in LAUNCH_VARS}


def torchrun_command(command: Command, nproc: int = 2) -> list[str]:
    """The single-process command ``[python, script.py | -m module, *args]`` launched as ``nproc`` processes:
    ``[python, -m, torch.distributed.run, --standalone, --nproc_per_node, N, script.py | -m module, *args]``."""
    cmd = [os.fspath(c) for c in command]
    _require(len(cmd) >= 2 and Path(cmd[0]).name.startswith("python"),
             f"expected a command [python, script | -m module, ...] to launch with torchrun, found {cmd[:3]}")
    return [cmd[0], "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *cmd[1:]]


def worker_pids(launcher_pid: int) -> dict[int, int]:
    """``{rank: pid}`` of the worker processes a running torchrun (``launcher_pid``) started: its children whose
    environment holds ``RANK`` (Linux ``/proc``; ``{}`` where it cannot be read)."""
    found: dict[int, int] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            if int(stat[stat.rindex(")") + 2 :].split()[1]) != launcher_pid:
                continue
            environ = (entry / "environ").read_bytes().split(b"\0")
            rank = next((int(var[5:]) for var in environ if var.startswith(b"RANK=")), None)
            if rank is not None:
                found[rank] = int(entry.name)
    return found


def check_two_process_resume_exact(command: Callable[[Path, bool], Command], folder: str | os.PathLike, *,
                                   final: str | Callable[[Path], Path], rank_files: str, resume_evidence: str,
                                   kill_on_output: str | None = None, kill_when: str | None = None,
                                   kill_delay_s: float = 0.0, signal_ranks: Sequence[int] | None = None,
                                   select: Callable[[Any], Any] | None = None,
                                   load: Callable[[Path], Any] | None = None, cwd: str | os.PathLike | None = None,
                                   env: Mapping[str, str] | None = None, nproc: int = 2,
                                   timeout: float = 600) -> ResumeCheck:
    """:func:`check_resume_exact` under ``torchrun --nproc_per_node 2`` (gloo on CPU): every rank resumes its own
    RNG streams and position, so with dropout the killed + resumed run ends bit for bit as the run left alone.

    ``command(run_dir, resume)`` is the single-process command line (``[python, script | -m module, ...]``; launched
    through :func:`torchrun_command`). Three runs under ``folder``: ``full``; ``killed``, sent SIGTERM once its
    output (both ranks', in ``folder/killed.log``) matches the regex ``kill_on_output``, or once the glob
    ``kill_when`` matches a file under its run dir (e.g. the first periodic save), then ``kill_delay_s`` seconds
    more (a kill in the middle of an epoch, while the ranks step). The signal goes to torchrun, which forwards it to
    every rank, or with ``signal_ranks`` only to those ranks' worker processes (:func:`worker_pids`): the ranks must
    agree at an update boundary (:class:`itr_common.checkpoint.SaveOnSignal`) and all save it. The killed run must
    end with a non-zero status and leave ``rank_files`` (a glob under the run dir, e.g.
    ``checkpoint.rank1.pth.tar``: rank 1's own state); then the same run dir resumed, which must exit 0 (every rank
    saved the same update: :func:`itr_common.rank_state.load_rank_state` refuses otherwise) and print
    ``resume_evidence``. ``final`` / ``select`` / ``load`` as :func:`check_resume_exact`. Launch variables of an
    enclosing torchrun are removed from ``env``.
    """
    from itr_common.checkpoint import load_checkpoint

    _require((kill_on_output is None) != (kill_when is None),
             "check_two_process_resume_exact: expected exactly one of kill_on_output / kill_when")
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    load = load or load_checkpoint
    select = select or (lambda state: state)
    env = torchrun_env(env or subprocess_env(CUDA_VISIBLE_DEVICES=""))
    final_of = final if callable(final) else (lambda run: run / final)
    full, killed = root / "full", root / "killed"
    launch = lambda run, resume: torchrun_command(command(run, resume), nproc)  # noqa: E731

    done = run_command(launch(full, False), cwd=cwd, env=env, timeout=timeout)
    _require(done.code == 0, f"uninterrupted {nproc}-process run: expected status 0, found {done.code}\n{done.tail()}")

    log_path = root / "killed.log"
    what = repr(kill_on_output if kill_on_output is not None else kill_when)
    if kill_on_output is not None:
        pattern = re.compile(kill_on_output)
        condition = lambda: pattern.search(log_path.read_text(errors="replace")) is not None  # noqa: E731
    else:
        condition = _glob_condition(killed, kill_when)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(launch(killed, False), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_for_kill_condition(proc, condition, what, timeout, lambda: "..." + log_path.read_text()[-2000:])
            time.sleep(kill_delay_s)
            if signal_ranks is None:
                proc.send_signal(signal.SIGTERM)
            else:
                pids = worker_pids(proc.pid)
                _require(all(rank in pids for rank in signal_ranks),
                         f"expected the worker processes of ranks {list(signal_ranks)}, found {pids}")
                for rank in signal_ranks:
                    os.kill(pids[rank], signal.SIGTERM)
            proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    output = log_path.read_text(errors="replace")
    _require(proc.returncode != 0, f"killed run: expected a non-zero status (saved, then exited), found 0; the kill "
                                   f"must land before the run ends\n...{output[-2000:]}")
    _require(any(killed.glob(rank_files)), f"killed run: expected {rank_files} under {killed} (the other rank's own "
                                            f"state), found none\n...{output[-2000:]}")
    _require_signal_saved(output, f"killed {nproc}-process run", ranks=nproc)

    resumed = run_command(launch(killed, True), cwd=cwd, env=env, timeout=timeout)
    _require(resumed.code == 0, f"resumed {nproc}-process run: expected status 0, found {resumed.code}\n"
                                f"{resumed.tail()}")
    _require(re.search(resume_evidence, resumed.stdout + resumed.stderr) is not None,
             f"resumed run: expected output matching {resume_evidence!r} (it must continue, not start over)\n"
             f"{resumed.tail()}")
    assert_same_tensors(select(load(final_of(full))), select(load(final_of(killed))), "final state")
    return ResumeCheck(proc.returncode, final_of(full), final_of(killed), resumed)


# ------------------------------------------------------------------------------------ (a) learning
def honesty_worlds(folder: str | os.PathLike, layouts: Sequence[str], size: str = "tiny", **changes: Any
                   ) -> dict[str, Path]:
    """The synthetic world ``size`` (with ``changes``, e.g. ``n_test=50``) and its shuffled-pairs twin.

    Returns ``{"real": path, "shuffled": path}`` (:func:`itr_common.synthetic.write_honesty_worlds`).
    """
    from itr_common.synthetic import generate_world, preset, write_honesty_worlds

    return write_honesty_worlds(generate_world(preset(size, **changes)), folder, layouts=tuple(layouts))


def rsum_of(result: Any) -> float:
    """The rsum of a RetrievalResult, a dict with ``rsum``, a result JSON file, or a number."""
    if isinstance(result, int | float):
        return float(result)
    if isinstance(result, str | os.PathLike):
        from itr_common.fileio import read_json

        result = read_json(result, "retrieval result JSON", expect=dict)
    if isinstance(result, Mapping):
        return float(result["rsum"])
    return float(result.rsum)


@dataclass
class LearningCheck:
    """Real and shuffled rsums against chance (``metrics.chance_recalls``)."""

    real: float
    shuffled: float
    chance: float
    real_result: Any = None
    shuffled_result: Any = None

    def summary(self) -> str:
        return f"rsum real {self.real:.1f}, shuffled {self.shuffled:.1f}, chance {self.chance:.1f}"


def check_learns(train_and_evaluate: Callable[[Path, Path], Any], worlds: Mapping[str, Path],
                 folder: str | os.PathLike, *, n_images: int, captions_per_image: int = 5,
                 min_gain: float = 80.0, max_shuffled_gain: float = 40.0) -> LearningCheck:
    """The same training learns on real pairs (rsum > chance + ``min_gain``) and not on shuffled ones.

    ``train_and_evaluate(world_dir, run_dir)`` trains on a tree of :func:`honesty_worlds` and
    evaluates on its test split of ``n_images`` images, returning a result (anything :func:`rsum_of`
    reads). Chance is ``metrics.chance_recalls(n_images, captions_per_image)["rsum"]``; on a
    50-image gallery its spread is about 13, so the defaults sit 3 or more spreads away.
    """
    from itr_common.metrics import chance_recalls

    root = Path(folder)
    chance = float(chance_recalls(n_images, captions_per_image)["rsum"])
    real_result = train_and_evaluate(Path(worlds["real"]), root / "real")
    shuffled_result = train_and_evaluate(Path(worlds["shuffled"]), root / "shuffled")
    check = LearningCheck(rsum_of(real_result), rsum_of(shuffled_result), chance, real_result, shuffled_result)
    print(check.summary())
    _require(check.real > chance + min_gain, f"expected real-pair rsum > chance + {min_gain}: {check.summary()}")
    _require(check.shuffled < chance + max_shuffled_gain,
             f"expected shuffled-pair rsum < chance + {max_shuffled_gain}: {check.summary()}")
    return check


def cli_train_and_evaluate(train: Callable[[Path, Path], Command], evaluate: Callable[[Path, Path], Command] | None,
                           result: Callable[[Path], Path], *, cwd: str | os.PathLike | None = None,
                           env: Mapping[str, str] | None = None, timeout: float = 900
                           ) -> Callable[[Path, Path], Any]:
    """A ``train_and_evaluate`` for :func:`check_learns` from command lines run in subprocesses.

    ``train(world, run)`` and ``evaluate(world, run)`` give full commands; ``result(run)`` is the
    retrieval-result JSON they write. Returns the :class:`~itr_common.metrics.RetrievalResult`.
    """
    from itr_common.fileio import read_json
    from itr_common.metrics import RetrievalResult

    def run(world: Path, run_dir: Path) -> RetrievalResult:
        for make in (train, evaluate):
            if make is None:
                continue
            outcome = run_command(make(world, run_dir), cwd=cwd, env=env, timeout=timeout)
            _require(outcome.code == 0, f"expected status 0, found {outcome.code}\n{outcome.tail()}")
        path = result(run_dir)
        return RetrievalResult.from_dict(read_json(path, "retrieval result JSON", expect=dict), str(path))

    return run


__all__ = [
    "LAUNCH_VARS",
    "SIGTERM_STATUS",
    "ConformanceError",
    "LearningCheck",
    "Outcome",
    "ResumeCheck",
    "assert_same_tensors",
    "check_checkpoint_round_trip",
    "check_console_script",
    "check_learns",
    "check_resume_exact",
    "check_saved_files",
    "check_sigterm_message",
    "check_two_process_resume_exact",
    "check_usage_error",
    "cli_train_and_evaluate",
    "console_script",
    "edit_checkpoint",
    "honesty_worlds",
    "invoke",
    "python_module",
    "rsum_of",
    "run_command",
    "single_thread",
    "state_dicts_in",
    "stderr_report",
    "subprocess_env",
    "torchrun_command",
    "torchrun_env",
    "tree_listing",
    "worker_pids",
]
