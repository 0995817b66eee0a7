"""Atomic file writes and JSON reads that fail with one line naming the file.

* :func:`atomic_open` is the one "write a temp file beside the target, fsync it, rename it over the
  target" of the package: a crash or an exception leaves either the old file or the new one, never a
  partial file, and no temp file behind. :func:`write_bytes_atomic`, :func:`write_text_atomic`,
  :func:`write_lines_atomic` and :func:`write_json_atomic` are its one-call forms.
* :func:`read_json` loads a JSON file (UTF-8) and raises :class:`~itr_common.errors.UserError` for a
  missing file, invalid JSON or, when asked, a value of the wrong JSON type.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from itr_common.errors import fail, require_file

__all__ = [
    "ResultSet",
    "atomic_open",
    "copy_file_atomic",
    "removed_on_failure",
    "result_set",
    "read_json",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_lines_atomic",
    "write_text_atomic",
]

WRITE_MODES = ("wb", "w", "wt")
_JSON_TYPE_NAMES: dict[type, str] = {
    dict: "object",
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


# ------------------------------------------------------------------------------------------- writing
@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike, mode: str = "wb", *, encoding: str | None = None, newline: str | None = None
) -> Iterator[IO[Any]]:
    """A handle on a temp file beside ``path`` that replaces ``path`` when the block succeeds.

    The parent folder is created if needed. The temp file (``.{name}.<random>.tmp`` in the same
    folder, so the rename never crosses a filesystem) gets the permissions a plain ``open`` would
    give, is flushed and fsynced, then renamed over ``path``; the folder is fsynced too where the
    filesystem allows it. On any error, the exception in the block included, the temp file is
    removed and ``path`` is left as it was.

    ``mode`` is ``"wb"`` (binary) or ``"w"`` / ``"wt"`` (text; ``encoding`` defaults to UTF-8,
    ``newline`` as for :func:`open`).
    """
    if mode not in WRITE_MODES:
        raise ValueError(f"atomic_open: expected mode {' / '.join(WRITE_MODES)}, found {mode!r}")
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=encoding, newline=newline) as handle:
            if hasattr(os, "fchmod"):  # POSIX: mkstemp's 0o600 -> what open() would give
                os.fchmod(handle.fileno(), _default_file_mode())
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(target.parent)


def copy_file_atomic(source: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Copy ``source`` to ``path`` atomically (see :func:`atomic_open`); the copy's mode follows the umask
    as a new file's would (never ``mkstemp``'s 0600). Returns ``path`` as a Path."""
    with open(source, "rb") as src, atomic_open(path, "wb") as handle:
        shutil.copyfileobj(src, handle, 1 << 20)
    return Path(path)


class ResultSet:
    """The files of one result set, staged in a hidden folder until :func:`result_set` commits them all."""

    def __init__(self, folder: Path, staging: Path) -> None:
        self.folder = folder
        self.staging = staging

    def path(self, name: str) -> Path:
        """Where to write the result file ``name`` (a plain name, no folders) while the set is staged."""
        if Path(name).name != name or name in ("", ".", ".."):
            raise ValueError(f"result_set: expected a plain file name, found {name!r}")
        return self.staging / name


STAGING_PREFIX = ".result-set-"


@contextlib.contextmanager
def result_set(folder: str | os.PathLike) -> Iterator[ResultSet]:
    """Write several result files so that ``folder`` holds the old set or the new one, never a mix.

    Inside the block, write each file to ``rs.path(name)`` (any writer; ``atomic_open`` included):
    the files go to a hidden staging folder ``folder/.result-set-*``. When the block succeeds, each
    is fsynced and renamed over ``folder/name`` (renames only: nothing is left half-written), and the
    staging folder removed. On any error (SIGTERM included) the staging folder is removed and
    ``folder``'s files are as before: no stray temp file, no mix of old and new files. Staging folders
    left by a killed process (SIGKILL) are removed by the next result set in ``folder``.
    """
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    for stale in target.glob(f"{STAGING_PREFIX}*.tmp"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(dir=target, prefix=STAGING_PREFIX, suffix=".tmp"))
    try:
        yield ResultSet(target, staging)
        staged = sorted(p for p in staging.iterdir() if p.is_file() and not p.name.startswith("."))
        for item in staged:
            with open(item, "rb+") as handle:
                os.fsync(handle.fileno())
        for item in staged:
            os.replace(item, target / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _fsync_dir(target)


@contextlib.contextmanager
def removed_on_failure(folder: str | os.PathLike, enabled: bool = True) -> Iterator[Callable[[], None]]:
    """Undo what a run created in ``folder`` when it fails before calling ``keep()`` (its first checkpoint).

    Yields ``keep``. When the block raises (a ``UserError``, a crash, SIGTERM or Ctrl-C) before
    ``keep()``, every entry of ``folder`` that was not there when the block began is removed, and
    ``folder`` itself when the block created it: a failed run leaves nothing that blocks the next
    plain run (e.g. "output_dir already exists and is not empty"). Entries that existed before are
    never touched. ``enabled=False`` (ranks > 0) does nothing.
    """
    root = Path(folder)
    existed = root.exists()
    before = {p.name for p in root.iterdir()} if existed and root.is_dir() else set()
    kept = False

    def keep() -> None:
        nonlocal kept
        kept = True

    try:
        yield keep
    except BaseException:
        if enabled and not kept and root.is_dir():
            for entry in root.iterdir():
                if entry.name in before:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        entry.unlink()
            if not existed:
                with contextlib.suppress(OSError):
                    root.rmdir()
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_open`); return ``path`` as a Path."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically, ``"\\n"`` kept as is; return ``path`` as a Path."""
    with atomic_open(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)
    return Path(path)


def write_lines_atomic(path: str | os.PathLike, lines: Iterable[str]) -> Path:
    """Write each of ``lines`` followed by ``"\\n"`` (UTF-8) to ``path`` atomically; return ``path``.

    The lines themselves should hold no line break (callers that take user data check that first).
    """
    with atomic_open(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.writelines(f"{line}\n" for line in lines)
    return Path(path)


def write_json_atomic(
    path: str | os.PathLike,
    value: Any,
    *,
    indent: int | None = 2,
    sort_keys: bool = False,
    default: Callable[[Any], Any] | None = None,
) -> Path:
    """``json.dumps(value)`` plus a trailing newline, written to ``path`` atomically; return ``path``.

    ``value`` is serialised before anything is written, so a value JSON refuses (``TypeError``)
    leaves ``path`` untouched. ``default`` converts what JSON does not know, as in :func:`json.dumps`.
    """
    text = json.dumps(value, indent=indent, sort_keys=sort_keys, default=default) + "\n"
    return write_text_atomic(path, text)


def _default_file_mode() -> int:
    """``0o666`` less the process umask: what ``open(path, "w")`` would create (mkstemp uses 0o600)."""
    return 0o666 & ~_umask() & (stat.S_IRWXU | stat.S_IRWXG | stat.S_IRWXO)


def _umask() -> int:
    """The process umask, read from ``/proc`` where possible so it is never changed, even briefly."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every filesystem opens a directory)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------- reading
def read_json(path: str | os.PathLike, what: str = "JSON file", expect: type | tuple[type, ...] | None = None) -> Any:
    """The value of the UTF-8 JSON file ``path``.

    Raises :class:`~itr_common.errors.UserError` naming the file when it is missing
    (``"{path}: {what} not found"``), holds invalid JSON or is not UTF-8
    (``"{path}: expected {what} as JSON, found invalid JSON (...)"``; "as JSON" is left out when
    ``what`` already says JSON), or, when ``expect`` (a type or a tuple of types) is given, holds
    another type of value (``"{path}: expected a JSON object ({what}), found a JSON array"``).
    """
    source = require_file(path, what)
    try:
        with open(source, encoding="utf-8") as handle:
            value = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        as_json = "" if "JSON" in what else " as JSON"
        fail(f"{source}: expected {what}{as_json}, found invalid JSON ({err})")
    if expect is not None and not isinstance(value, expect):
        expected = " or ".join(dict.fromkeys(map(_json_type_name, expect if isinstance(expect, tuple) else (expect,))))
        fail(f"{source}: expected a JSON {expected} ({what}), found a JSON {_json_type_name(type(value))}")
    return value


def _json_type_name(kind: type) -> str:
    """JSON's name for a Python type (``dict`` -> ``object``), else the type's own name."""
    return _JSON_TYPE_NAMES.get(kind, kind.__name__)
