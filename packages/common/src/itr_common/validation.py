"""Every option checked before any work: type, range, device, output locations, feature sizes.

One line per problem, naming the flag or config key, the value found and what was expected, raised
as :class:`~itr_common.errors.UserError` (exit status 2 under ``cli_entry``):

* :class:`Check` with :func:`integer`, :func:`number` (always finite), :func:`boolean`,
  :func:`text`, :func:`choice`; :func:`check_value` / :func:`check_options` apply them
  (``--learning_rate: expected a finite number > 0, found nan``);
* :func:`check_config_types` checks a config file's values against the argparse options they set
  (``config.json: config key 'fp16': expected true or false, found 'no' (a string)``), used by
  :func:`itr_common.config.apply_config`;
* :func:`check_device` (``--device cuda`` without a GPU), :func:`require_writable` (an output
  folder or file that cannot be created or written), :func:`check_same_size` (region features of
  every split and the checkpoint).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from itr_common.errors import fail

__all__ = [
    "Check",
    "boolean",
    "check_config_types",
    "check_device",
    "check_options",
    "check_same_size",
    "check_value",
    "choice",
    "describe_value",
    "integer",
    "number",
    "require_writable",
    "text",
]


def describe_value(value: Any) -> str:
    """How a found value is shown: ``nan``, ``2.5``, ``'no' (a string)``, ``true``, ``null``, ``[1, 2]``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"'{value}' (a string)"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return repr(value)


@dataclass(frozen=True)
class Check:
    """What a value must be: ``kind`` (int, number, bool, str, choice), bounds, choices, None allowed."""

    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] = ()
    optional: bool = False
    many: bool = False

    def describe(self) -> str:
        """``an integer >= 1``, ``a finite number in (0, 1)``, ``true or false``, ``one of 'a', 'b'``,
        ``a list of finite numbers in [0, 1)``."""
        if self.kind == "bool":
            base = "true/false values" if self.many else "true or false"
        elif self.kind == "choice":
            base = ("values, each " if self.many else "") + "one of " + ", ".join(repr(c) for c in self.choices)
        elif self.kind == "str":
            base = "strings" if self.many else "a string"
        elif self.many:
            base = ("integers" if self.kind == "int" else "finite numbers") + self._range()
        else:
            base = ("an integer" if self.kind == "int" else "a finite number") + self._range()
        if self.many:
            base = f"a list of {base}"
        return f"{base} or null" if self.optional else base

    def _range(self) -> str:
        low, high = self.low, self.high
        if low is not None and high is not None:
            return f" in {'(' if self.low_open else '['}{_num(low)}, {_num(high)}{')' if self.high_open else ']'}"
        if low is not None:
            return f" {'>' if self.low_open else '>='} {_num(low)}"
        if high is not None:
            return f" {'<' if self.high_open else '<='} {_num(high)}"
        return ""

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if self.many:
            return isinstance(value, list | tuple) and all(self._accepts_one(v) for v in value)
        return self._accepts_one(value)

    def _accepts_one(self, value: Any) -> bool:
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "str":
            return isinstance(value, str)
        if self.kind == "choice":
            return any(value == c and type(value) is type(c) for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.kind == "int" and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def integer(low: int | None = None, high: int | None = None, *, optional: bool = False, many: bool = False) -> Check:
    """An int (not a bool, not 2.5, not "3") in ``[low, high]``."""
    return Check("int", low, high, optional=optional, many=many)


def number(low: float | None = None, high: float | None = None, *, above: float | None = None,
           below: float | None = None, optional: bool = False, many: bool = False) -> Check:
    """A finite int or float (not NaN/inf, not a bool or string) ``>= low`` / ``> above``, ``<= high`` / ``< below``."""
    return Check("number", above if above is not None else low, below if below is not None else high,
                 low_open=above is not None, high_open=below is not None, optional=optional, many=many)


def boolean(*, optional: bool = False) -> Check:
    """``true`` or ``false`` (not ``"no"``, not 0/1)."""
    return Check("bool", optional=optional)


def text(*, optional: bool = False) -> Check:
    """A string."""
    return Check("str", optional=optional)


def choice(*choices: Any, optional: bool = False) -> Check:
    """One of ``choices`` (same value and type)."""
    return Check("choice", choices=tuple(choices), optional=optional)


def check_value(name: str, value: Any, check: Check) -> Any:
    """``value`` when ``check`` accepts it, else ``UserError("<name>: expected <what>, found <value>")``."""
    if not check.accepts(value):
        fail(f"{name}: expected {check.describe()}, found {describe_value(value)}")
    return value


def check_options(options: argparse.Namespace | Mapping[str, Any], checks: Mapping[str, Check],
                  prefix: str = "--") -> None:
    """Apply ``checks`` (``{option name: Check}``) to ``options``; each problem names ``<prefix><name>``."""
    values = vars(options) if isinstance(options, argparse.Namespace) else options
    for name, check in checks.items():
        check_value(f"{prefix}{name}", values.get(name), check)


# ------------------------------------------------------------------------------- config file types
def _type_of_action(action: argparse.Action) -> Check | None:
    """The value type an argparse option takes, as a Check (None: not known, left to the program)."""
    optional = action.default is None
    many = action.nargs not in (None, "?", 0)
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
        return boolean()
    if isinstance(action, argparse._StoreConstAction) or action.nargs == 0:
        return None
    if action.type is int:
        return Check("int", optional=optional, many=many)
    if action.type is float:
        return Check("number", optional=optional, many=many)
    if action.type in (None, str):
        return Check("str", optional=optional, many=many) if not action.choices else None
    return None


def check_config_types(config: Mapping[str, Any], parser: argparse.ArgumentParser, source: str | os.PathLike) -> None:
    """Each config value has the type of the option it sets (int, number, bool, string, lists of them).

    A JSON ``"fp16": "no"`` (a string for a switch), ``"valid_steps": 2.5``, ``"learning_rate": "1e-4"``
    or ``NaN`` fails naming ``source``, the key, the value and the type expected. A list is accepted
    for a string option (UNITER configs list several dbs where a flag takes one).
    """
    actions = {a.dest: a for a in parser._actions if a.option_strings}
    for key, value in config.items():
        action = actions.get(key)
        if action is None:
            continue
        check = _type_of_action(action)
        if check is None:
            continue
        if check.kind == "str" and isinstance(value, list) and all(isinstance(v, str) for v in value):
            continue
        if check.many and not isinstance(value, list | tuple):
            check = Check(check.kind, optional=check.optional)
        check_value(f"{source}: config key '{key}'", value, check)


# --------------------------------------------------------------------------------------- device
def check_device(value: str | None, flag: str = "--device") -> None:
    """A ``--device`` the machine has: ``cpu``, ``cuda`` / ``cuda:N`` only with N < the GPU count."""
    if value is None:
        return
    import torch

    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        fail(f"{flag}: expected cpu, cuda or cuda:N, found '{value}'")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            fail(f"{flag}: expected cpu (no CUDA GPU is available here), found '{value}'")
        if device.index is not None and device.index >= count:
            choices = "cuda:0" if count == 1 else f"cuda:0 .. cuda:{count - 1}"
            fail(f"{flag}: expected {choices} ({count} GPU{'s' if count > 1 else ''} here), found '{value}'")
    elif device.type not in ("cpu", "mps", "meta"):
        fail(f"{flag}: expected cpu, cuda or cuda:N, found '{value}'")


# --------------------------------------------------------------------------------------- outputs
def require_writable(path: str | os.PathLike, what: str, kind: str = "dir") -> Path:
    """Fail (naming ``what``) unless ``path`` can be created and written, checked by a real probe file.

    ``kind="dir"``: an output folder (existing, or creatable under its nearest existing ancestor);
    ``kind="file"``: an output file (not a folder; its folder as for ``"dir"``). The probe writes and
    fsyncs one byte, so a full filesystem fails here too. Nothing is left behind: the probe file is
    removed and no folder is created.
    """
    target = Path(path)
    if kind == "file":
        if target.is_dir():
            fail(f"{what} {target}: expected a file path, found a directory")
        folder = target.parent if str(target.parent) else Path(".")
    elif kind == "dir":
        if target.exists() and not target.is_dir():
            fail(f"{what} {target}: expected a directory, found a file")
        folder = target
    else:
        raise ValueError(f"kind: expected 'dir' or 'file', found {kind!r}")
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        fail(f"{what} {target}: cannot be created, {existing} is a file")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".write-probe-")
        try:
            os.write(fd, b"\0")  # one block: a full filesystem refuses it (ENOSPC) where an empty file passes
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        fail(f"{what} {target}: not writable ({existing}: {reason})")
    return target


# ---------------------------------------------------------------------------------- feature sizes
def check_same_size(sizes: Mapping[str, int | None], what: str = "region feature size",
                    flag: str | None = None) -> int | None:
    """All known ``sizes`` (``{source: size}``, None = unknown) agree; returns the size.

    ``UserError`` names every source with its size: ``region feature size: expected the same in every
    split and the checkpoint, found train (path) 32, dev (path) 16``.
    """
    known = {name: size for name, size in sizes.items() if size is not None}
    if len(set(known.values())) > 1:
        listing = ", ".join(f"{name} {size}" for name, size in known.items())
        prefix = f"{flag}: " if flag else ""
        fail(f"{prefix}{what}: expected the same in every split and the checkpoint, found {listing}")
    return next(iter(known.values()), None)

