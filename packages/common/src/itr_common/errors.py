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
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn, TypeVar

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


def cli_entry(fn: F) -> F:
    """Decorate a ``main(argv=None)``: a :class:`UserError` becomes one stderr line and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(EXIT_USAGE) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None

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
