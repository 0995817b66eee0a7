"""User-facing errors: one clear line, exit status 2, no traceback.

Every console script is ``main(argv=None)`` decorated with :func:`cli_entry`. Code anywhere below it
raises :class:`UserError` (or calls :func:`fail`) for bad input: a missing file, a bad flag value, a
wrong shape. The decorator prints ``error: <message>`` on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from itr_common.worker_exit import end_worker, is_torchrun_worker

EXIT_USAGE = 2

F = TypeVar("F", bound=Callable[..., Any])


class UserError(Exception):
    """Bad input from the user: reported as one line, exit status 2."""


def fail(message: str) -> NoReturn:
    """Raise a :class:`UserError` with ``message``."""
    raise UserError(message)


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The closest valid name to ``name`` among ``choices`` (difflib), or None."""
    matches = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return matches[0] if matches else None


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` when a close valid name exists, else ``""``."""
    match = closest(name, choices)
    return f"; did you mean '{match}'?" if match else ""


class Terminated(BaseException):
    """SIGTERM received outside a block that handles it (start-up, teardown): exit 143 with a message."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)


def exit_status(result: Any) -> int | None:
    """What a ``main`` return value means to ``sys.exit``: None and ints as they are, anything else 0.

    Console scripts run ``sys.exit(main())``: a returned result object would be printed as a repr
    on stderr and exit with status 1. A successful ``main`` therefore always means status 0.
    """
    if result is None or (isinstance(result, int) and not isinstance(result, bool)):
        return result
    return 0


def cli_entry(fn: F) -> F:
    """Decorate a ``main(argv=None)`` run as a console script (``sys.exit(main())``).

    * :class:`UserError` -> ``error: <message>`` on one stderr line, exit status 2;
    * KeyboardInterrupt (SIGINT) -> ``interrupted``, status 130; SIGTERM outside a handler of the
      program's own (start-up, teardown: :class:`~itr_common.checkpoint.SaveOnSignal` covers the
      training loop) -> ``terminated by SIGTERM``, status 143 instead of a silent -15;
    * the return value is an exit status: None or an int as returned, anything else (a result
      object) becomes 0, so a successful run exits 0 and never prints a repr. Functions whose result
      tests or the Python API need are separate (``run(...)``), called by ``main``;
    * in a torchrun worker the process then ends through :func:`itr_common.worker_exit.end_worker` with that
      status (Python's shutdown steps, no interpreter teardown: DDP's leaked gloo threads can abort it
      otherwise); an unexpected exception there prints its traceback as Python would and ends it with status 1.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not is_torchrun_worker():
            return guarded(*args, **kwargs)
        try:
            status: object = guarded(*args, **kwargs)
        except SystemExit as stop:
            status = stop.code
        except Exception:  # a bug: its traceback as Python prints it, status 1, and no abort after it
            sys.excepthook(*sys.exc_info())
            status = 1
        end_worker(status)  # a torchrun worker ends without the interpreter's teardown (itr_common.worker_exit)

    def guarded(*args: Any, **kwargs: Any) -> Any:
        installed = False
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) in (
            signal.SIG_DFL,
            None,
        ):
            signal.signal(signal.SIGTERM, _raise_terminated)
            installed = True
        try:
            return exit_status(fn(*args, **kwargs))
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(EXIT_USAGE) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None
        except Terminated as term:
            print(f"terminated by {signal.Signals(term.signum).name}", file=sys.stderr)
            raise SystemExit(128 + term.signum) from None
        finally:
            if installed and signal.getsignal(signal.SIGTERM) is _raise_terminated:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)

    wrapper.is_cli_entry = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors and a 'did you mean' for unknown flags.

    Prefix abbreviations stay allowed (``allow_abbrev=True``) because the papers' READMEs use them
    (DIME's ``--lambda_softmax=4`` for ``--lambda_softmax_CMRC``).
    """

    def _known_flags(self) -> list[str]:
        return [opt for action in self._actions for opt in action.option_strings]

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            flags = [e.split("=", 1)[0] for e in extras if e.startswith("-")]
            hint = did_you_mean(flags[0], self._known_flags()) if flags else ""
            self.error(f"unrecognized arguments: {' '.join(extras)}{hint}")
        return parsed

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def check_keys(config: Mapping[str, Any], valid: Iterable[str], source: str | os.PathLike) -> None:
    """Fail on the first key of ``config`` not in ``valid``, naming the closest valid key."""
    valid = list(valid)
    for key in config:
        if key not in valid:
            fail(f"{source}: unknown config key '{key}'{did_you_mean(key, valid)}")


def require_file(path: str | os.PathLike, what: str = "file") -> Path:
    """Return ``path`` as a Path, or fail naming it when it is not an existing file."""
    p = Path(path)
    if not p.is_file():
        fail(f"{p}: {what} not found" if not p.exists() else f"{p}: expected a {what}, found a directory")
    return p


def require_dir(path: str | os.PathLike, what: str = "directory") -> Path:
    """Return ``path`` as a Path, or fail naming it when it is not an existing directory."""
    p = Path(path)
    if not p.is_dir():
        fail(f"{p}: {what} not found" if not p.exists() else f"{p}: expected a {what}, found a file")
    return p
